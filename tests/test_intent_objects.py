"""The Istio objects in a bundle drive the trace's intent: a STRICT PeerAuthentication on
the destination turns a plaintext client's path into a warned one; without the objects the
intent says it fell back to labels (peer_authentication: unknown)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from ambientctl.collectors.discovery import MESH_PROJECTIONS, as_kubectl_list
from tests.test_discovery import _mesh_docs

ROOT = Path(__file__).resolve().parent.parent
INPOD = ROOT / "examples" / "inpod-kind-ambient"


def _intent(bundle: Path, src: str, dst: str) -> dict:
    res = subprocess.run([sys.executable, "-m", "ambientctl", "trace", src, dst, "--bundle",
                          str(bundle), "-o", "json"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode in (0, 1), res.stderr
    return json.loads(res.stdout)["intent"]


def test_without_istio_objects_intent_falls_back_to_labels_and_says_so() -> None:
    intent = _intent(INPOD, "curl", "productpage")
    assert intent["peer_authentication"] == "unknown"
    assert any("labels only" in s for s in intent["intent_sources"])


def test_strict_peer_authentication_from_the_bundle_is_applied_to_the_destination(
        tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(INPOD, b)
    (b / "manifest.json").unlink()  # edited by hand: no hashes to match
    docs = _mesh_docs()
    pa = docs["peerauthentications"]["items"][0]
    pa["spec"]["selector"]["matchLabels"] = {"app": "productpage"}
    for kind, plural in (("PeerAuthentication", "peerauthentications"),
                         ("AuthorizationPolicy", "authorizationpolicies"),
                         ("Gateway", "gateways")):
        objs = [MESH_PROJECTIONS[kind](o) for o in docs[plural]["items"]] \
            if kind == "PeerAuthentication" else []
        (b / "cluster" / f"{plural}.json").write_bytes(as_kubectl_list(objs))
    strict = _intent(b, "curl", "productpage")
    assert strict["peer_authentication"] == "STRICT"
    assert any(n.startswith("PeerAuthentication STRICT (cluster/peerauthentications.json")
               for n in strict["notes"])
    assert any("rejects plaintext" in n for n in strict["notes"])
    assert not any("labels only" in s for s in strict["intent_sources"])
    # the selector decides: sleep is not selected, so its namespace default applies
    assert _intent(b, "curl", "reviews")["peer_authentication"] == "PERMISSIVE"
