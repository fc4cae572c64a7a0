"""SRC and DST as kubectl, curl and DNS users type them (issue: kubectl habits).

Every form resolves to the same pod or Service as the plain name does on the seed
example; errors repeat what was typed (with the `-n` namespace) and offer close matches.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ambientctl.analyzers.selector_syntax import parse
from ambientctl.analyzers.selectors import resolve
from ambientctl.errors import SelectorError, UsageError
from ambientctl.loading import load_snapshot

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "seed-kind-ambient"


@pytest.fixture(scope="module")
def snap():  # type: ignore[no-untyped-def]
    return load_snapshot(str(EXAMPLE))


@pytest.mark.parametrize("text,kind,name,ns,port", [
    ("pod/sleep-1", "pod", "sleep-1", None, None),
    ("po/sleep-1", "pod", "sleep-1", None, None),
    ("deploy/sleep", "deployment", "sleep", None, None),
    ("deployment/sleep", "deployment", "sleep", None, None),
    ("svc/productpage", "service", "productpage", None, None),
    ("service/productpage:9080", "service", "productpage", None, 9080),
    ("node/ambient-worker", "node", "ambient-worker", None, None),
    ("default/sleep", None, "sleep", "default", None),
    ("productpage.default", None, "productpage", "default", None),
    ("productpage.default.svc", "service", "productpage", "default", None),
    ("productpage.default.svc.cluster.local", "service", "productpage", "default", None),
    ("productpage.default.svc.cluster.local:9080", "service", "productpage", "default", 9080),
    ("productpage:9080", None, "productpage", None, 9080),
    ("http://productpage:9080/productpage?u=1", None, "productpage", None, 9080),
    ("http://productpage.default/", None, "productpage", "default", 80),
    ("https://productpage.default.svc.cluster.local/", "service", "productpage", "default", 443),
    ("10.244.1.7:9080", "ip", "10.244.1.7", None, 9080),
    ("[fd00::7]:9080", "ip", "fd00::7", None, 9080),
    ("fd00::7", "ip", "fd00::7", None, None),
])
def test_every_typed_form_parses_to_kind_name_namespace_and_port(
        text: str, kind: str | None, name: str, ns: str | None, port: int | None) -> None:
    q = parse(text)
    assert (q.kind, q.name, q.namespace, q.port) == (kind, name, ns, port)


@pytest.mark.parametrize("text", ["productpage:99999", "productpage:http", "[fd00::7",
                                  "pod/", "a/b/c", ""])
def test_malformed_forms_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse(text)


@pytest.mark.parametrize("text", ["deploy/sleep", "deployment/sleep", "pod/sleep-7b85956664-z6qh7",
                                  "default/sleep", "sleep.default", "svc/sleep", "sleep"])
def test_source_forms_resolve_to_the_sleep_pod(snap, text: str) -> None:  # type: ignore[no-untyped-def]
    ep = resolve(snap, text, role="source")
    assert ep.kind == "pod" and ep.pod is not None
    assert ep.pod.name == "sleep-7b85956664-z6qh7"


@pytest.mark.parametrize("text", ["svc/productpage", "productpage.default",
                                  "productpage.default.svc.cluster.local", "productpage:9080",
                                  "http://productpage:9080/", "default/productpage"])
def test_destination_forms_resolve_to_the_productpage_service(snap, text: str) -> None:  # type: ignore[no-untyped-def]
    ep = resolve(snap, text, role="destination")
    assert ep.kind == "service" and ep.service is not None
    assert (ep.service.namespace, ep.service.name, ep.port) == ("default", "productpage", 9080)


def test_namespace_option_scopes_names_without_their_own(snap) -> None:  # type: ignore[no-untyped-def]
    assert resolve(snap, "sleep", role="source", namespace="default").pod is not None
    with pytest.raises(SelectorError) as err:
        resolve(snap, "sleep", role="source", namespace="nope")
    assert err.value.message == ("source 'sleep' in namespace 'nope' matches no pod, deployment, "
                                 "app label or address in the bundle")
    assert "namespaces: default, istio-system" in (err.value.hint or "")
    # a namespace in the text wins over -n
    assert resolve(snap, "default/sleep", role="source", namespace="nope").pod is not None


def test_a_typo_offers_close_matches_not_the_first_pods(snap) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SelectorError) as err:
        resolve(snap, "prodpage", role="destination")
    assert err.value.hint is not None and err.value.hint.startswith("did you mean: productpage")


def test_typed_kind_never_falls_back_to_another_kind(snap) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SelectorError) as err:
        resolve(snap, "svc/sleep-7b85956664-z6qh7", role="destination")
    assert "matches no Service" in err.value.message


def test_port_in_the_text_and_a_different_port_option_conflict(snap) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError):
        resolve(snap, "productpage:9080", role="destination", port=8080)


def test_cli_accepts_kubectl_forms_and_n() -> None:
    res = subprocess.run([sys.executable, "-m", "ambientctl", "trace", "-n", "default",
                          "deploy/sleep", "http://productpage:9080/", "--bundle", str(EXAMPLE),
                          "-o", "json"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    assert '"name": "sleep-7b85956664-z6qh7"' in res.stdout
