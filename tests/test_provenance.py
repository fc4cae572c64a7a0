"""Text outputs say what the bundle was collected with (issue 9 §2): the tool versions
each node reported and the Istio components' image tags, read from the typed manifest
(`targets[].tool_versions`, `components`), short and each tool once. JSON is unchanged:
tests/test_golden_outputs.py pins that."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ambientctl.istio import IMAGE_COMPONENTS, image_component
from ambientctl.manifest_model import Manifest, ManifestTarget, read_manifest
from ambientctl.render.provenance import collected_with

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed-kind-ambient"

_NODE = {"iptables": "iptables v1.8.9 (nf_tables)",
         "iproute2": "ip utility, iproute2-6.1.0, libbpf 1.1.2",
         "ipset": "ipset v7.17, protocol version: 7",
         "nft": "nftables v1.0.6 (Lester Gooch #5)", "kernel": "6.18.44-fc-v1252"}


def _manifest(*versions: dict[str, str], components: dict[str, tuple[str, ...]] | None = None,
              ) -> Manifest:
    targets = tuple(ManifestTarget(f"node/n{i}", "node", f"n{i}", f"nodes/n{i}/host",
                                   tool_versions=v) for i, v in enumerate(versions))
    return Manifest(targets=targets, components=components or {})


def test_each_tool_once_with_the_version_it_printed_and_iptables_keeps_its_backend() -> None:
    m = _manifest(_NODE, dict(_NODE), components={"ztunnel": ("1.24.0",)})
    assert collected_with(m) == (
        "collected with: iptables v1.8.9 (nf_tables), iproute2 6.1.0, ipset v7.17, "
        "nft v1.0.6, kernel 6.18.44-fc-v1252, ztunnel 1.24.0")


def test_versions_that_differ_across_nodes_are_all_shown() -> None:
    other = {**_NODE, "iptables": "iptables v1.8.7 (legacy)", "kernel": "5.15.0-91-generic"}
    line = collected_with(_manifest(_NODE, other, components={
        "ztunnel": ("1.23.2", "1.24.0"), "istiod": ("1.24.0",)}))
    assert line is not None
    assert "iptables v1.8.9 (nf_tables)/v1.8.7 (legacy)" in line
    assert "kernel 6.18.44-fc-v1252/5.15.0-91-generic" in line
    assert line.endswith("istiod 1.24.0, ztunnel 1.23.2/1.24.0")


def test_a_tool_that_printed_no_version_is_left_out_and_nothing_known_is_no_line() -> None:
    failed = {"iptables": "", "nft": "sh: nft: not found", "kernel": "6.1.0"}
    assert collected_with(_manifest(failed)) == "collected with: kernel 6.1.0"
    assert collected_with(_manifest({"nft": "not found"})) is None
    assert collected_with(Manifest()) is None and collected_with(None) is None


def test_a_commit_hash_in_a_tag_is_shortened_to_twelve_digits() -> None:
    m = _manifest(components={"ztunnel": ("0.0.0-ambient.191fe680b52c1754ee72a06b3e0d3f9d116f2e82",)})
    assert collected_with(m) == "collected with: ztunnel 0.0.0-ambient.191fe680b52c"


def test_damaged_version_fields_in_a_manifest_are_problems_not_provenance() -> None:
    m = read_manifest({"targets": [{"id": "node/n1", "tool_versions": {"nft": 7,
                                                                      "kernel": "6.1.0"}}],
                       "components": {"ztunnel": "1.24.0"}})
    assert collected_with(m) == "collected with: kernel 6.1.0"
    assert any("components.ztunnel" in p for p in m.problems)


@pytest.mark.parametrize("image,want", [
    ("docker.io/istio/ztunnel:1.24.0", ("ztunnel", "1.24.0")),
    ("gcr.io/istio-testing/ztunnel:0.0.0-ambient.191fe680", ("ztunnel", "0.0.0-ambient.191fe680")),
    ("registry.local:5000/istio/ztunnel", ("ztunnel", "latest")),  # a port is not a tag
    ("istio/install-cni:1.24.0-distroless", ("istio-cni", "1.24.0-distroless")),
    ("istio/proxyv2:1.24.0", ("istio-proxy", "1.24.0")),
    ("istio/pilot:1.24.0", ("istiod", "1.24.0")),
    ("docker.io/library/nginx:1.25", None),
    ("example.com/team/not-ztunnel:1.0", None),
])
def test_an_image_names_its_istio_component_and_tag(image: str,
                                                     want: tuple[str, str] | None) -> None:
    assert image_component(image) == want


def test_redaction_keeps_readable_exactly_the_images_the_manifest_counts() -> None:
    from ambientctl.bundle.redact_fields import ISTIO_IMAGES

    assert ISTIO_IMAGES == frozenset(IMAGE_COMPONENTS)


def _run(*argv: str) -> str:
    return subprocess.run([sys.executable, "-m", "ambientctl", *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=120).stdout


def test_trace_and_doctor_text_carry_the_line_and_their_json_does_not() -> None:
    want = "collected with: iptables v1.8.9 (nf_tables)"
    trace = _run("trace", "sleep", "productpage", "--bundle", str(SEED)).splitlines()
    assert trace[2].startswith(want) and trace[1].startswith("bundle: ")  # after the header
    doctor = _run("doctor", "--bundle", str(SEED)).splitlines()
    assert doctor[1].startswith(want) and doctor[0].startswith("ambientctl doctor: ")
    for argv in (("trace", "sleep", "productpage"), ("doctor",)):
        assert "collected with" not in _run(*argv, "--bundle", str(SEED), "-o", "json")
