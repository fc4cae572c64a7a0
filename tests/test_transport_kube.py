"""Kubernetes exec transport against the API test peer: the unmodified kubernetes client
over the `v4.channel.k8s.io` WebSocket subprotocol, status read from channel 3."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from ambientctl.collectors.kube import ClientFactory, KubeExecTransport, KubeSource
from ambientctl.collectors.transport import NetnsRef
from ambientctl.errors import TransportError
from tests.peers.kube_api import KubeApi
from tests.peers.lab import cni_pod_names, kube_exec_targets, lab_cluster

pytestmark = pytest.mark.kernel

ZTUNNEL = ("istio-system", "ztunnel-vxv4b")
APP = ("default", "productpage-v1-7c548b785b-w9zl6")

pytest_plugins = ["tests.peers.fixtures"]


@pytest.fixture(scope="module")
def api(seed_lab: Any, views: Any, peer_dir: Path) -> Any:
    docs = lab_cluster(with_cni=True)
    targets = kube_exec_targets(seed_lab, views, docs)
    with KubeApi(docs, targets) as server:
        server.kubeconfig(peer_dir / "kube-transport.conf")
        yield server


@pytest.fixture(scope="module")
def factory(api: KubeApi, peer_dir: Path) -> ClientFactory:
    return ClientFactory(KubeSource(kubeconfig=str(peer_dir / "kube-transport.conf")))


def transport(
    factory: ClientFactory, pod: tuple[str, str], container: str | None = None
) -> KubeExecTransport:
    return KubeExecTransport(pod[0], pod[1], container, client_factory=factory)


def test_success_status_accepts_the_output(factory: ClientFactory) -> None:
    res = transport(factory, APP).run(
        ["ip", "-o", "-4", "addr", "show", "dev", "eth0"], netns=None, timeout=10
    )
    assert res.exit_code == 0 and b"10.244.1.7/24" in res.stdout and not res.not_found


def test_nonzero_exit_is_decoded_from_the_status_causes(factory: ClientFactory) -> None:
    res = transport(factory, APP).run(
        ["sh", "-c", "echo out; echo err >&2; exit 42"], netns=None, timeout=10
    )
    assert (res.exit_code, res.stdout, res.stderr) == (42, b"out\n", b"err\n")


def test_a_distroless_image_reports_not_found(seed_lab: Any, views: Any, peer_dir: Path) -> None:
    docs = lab_cluster()
    targets = kube_exec_targets(seed_lab, views, docs, ztunnel_binaries=frozenset({"ztunnel"}))
    with KubeApi(docs, targets) as server:
        conf = server.kubeconfig(peer_dir / "distroless.conf")
        t = transport(ClientFactory(KubeSource(kubeconfig=str(conf))), ZTUNNEL, "istio-proxy")
        res = t.run(["iptables-save"], netns=None, timeout=10)
    assert res.not_found and res.exit_code is None
    assert b"executable file not found" in res.stderr


def test_a_stream_without_status_is_refused_as_possibly_truncated(
    seed_lab: Any, views: Any, peer_dir: Path
) -> None:
    docs = lab_cluster()
    with KubeApi(docs, kube_exec_targets(seed_lab, views, docs), drop_status=True) as server:
        conf = server.kubeconfig(peer_dir / "truncating.conf")
        t = transport(ClientFactory(KubeSource(kubeconfig=str(conf))), APP)
        with pytest.raises(TransportError, match="without a status; output may be truncated"):
            t.run(["echo", "partial"], netns=None, timeout=10)


def test_a_hung_exec_hits_the_deadline(factory: ClientFactory) -> None:
    res = transport(factory, APP).run(["sh", "-c", "echo first; sleep 20"], netns=None, timeout=1)
    assert res.timed_out and res.exit_code is None and res.stdout == b"first\n"


def test_handshake_errors_are_one_line_transport_errors(
    factory: ClientFactory, api: KubeApi, peer_dir: Path
) -> None:
    with pytest.raises(TransportError, match=r'HTTP 404 \(pods "nope" not found\)'):
        transport(factory, ("default", "nope")).run(["true"], netns=None, timeout=5)
    with pytest.raises(TransportError, match="container nope is not valid"):
        transport(factory, APP, "nope").run(["true"], netns=None, timeout=5)
    bad = peer_dir / "badtoken.conf"
    bad.write_text((peer_dir / "kube-transport.conf").read_text().replace(api.token, "wrong"))
    with pytest.raises(TransportError, match="HTTP 401") as err:
        transport(ClientFactory(KubeSource(kubeconfig=str(bad))), APP).run(
            ["true"], netns=None, timeout=5
        )
    assert err.value.hint and "rbac.yaml" in err.value.hint


def test_exec_through_the_istio_cni_pod_enters_pod_netns_by_path(
    factory: ClientFactory, seed_lab: Any
) -> None:
    cni = cni_pod_names(lab_cluster(with_cni=True))["ambient-worker2"]
    netns = NetnsRef(
        path="/var/run/netns/" + seed_lab.netns_name(f"ambient-worker2/pod/{APP[0]}/{APP[1]}")
    )
    res = transport(factory, ("istio-system", cni)).run(
        ["ip", "-o", "-4", "addr", "show", "dev", "eth0"], netns=netns, timeout=10
    )
    assert res.exit_code == 0 and b"10.244.1.7/24" in res.stdout


def test_32_concurrent_execs_on_one_transport_each_get_their_own_output(
    factory: ClientFactory,
) -> None:
    # perf-reliability R4: the client's stream() swaps call_api on its ApiClient; one
    # ApiClient shared by threads mixes REST and WebSocket calls (python#928).
    t = transport(factory, APP)
    results: dict[int, Any] = {}

    def work(i: int) -> None:
        results[i] = t.run(["sh", "-c", f"echo {i}; exit {i % 7}"], netns=None, timeout=20)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(32)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert {i: (r.stdout, r.exit_code) for i, r in results.items()} == {
        i: (f"{i}\n".encode(), i % 7) for i in range(32)
    }
    assert len(t._clients) == 32  # one ApiClient per worker thread
    t.close()


def _forward_after_the_pod_side_hung_up(factory: ClientFactory, pod: tuple[str, str]) -> Any:
    """A port-forward to :15000 whose stream the peer already ended: the lab's listener
    answers one line and closes on accept, the peer then closes the WebSocket (as kubelet
    does when its copy from the pod ends), and the client's proxy thread closes its half
    of the socketpair - all before we write a byte. This is the order a loaded machine
    produces by chance (CI's flaky "Broken pipe"); here it is forced."""
    import time

    from kubernetes import client as k8s
    from kubernetes.stream import portforward

    api_client = factory()
    pf = portforward(
        k8s.CoreV1Api(api_client).connect_get_namespaced_pod_portforward,
        pod[1], pod[0], ports="15000",
    )
    proxy_end = pf.local_ports[15000].python  # the client library's end of the socketpair
    deadline = time.monotonic() + 10
    while proxy_end.fileno() != -1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy_end.fileno() == -1, "the peer never ended the stream"
    return pf


def test_a_listener_that_answers_and_closes_before_the_request_is_curls_exit_1(
    factory: ClientFactory,
) -> None:
    from ambientctl.collectors.exec_outcome import Deadline
    from ambientctl.collectors.kube import KubePortForwardTransport

    pf = _forward_after_the_pod_side_hung_up(factory, ZTUNNEL)
    try:
        res = KubePortForwardTransport._get(pf, 15000, "/config_dump", Deadline(10), "pf")
    finally:
        pf.close()
    # curl would write its request, then read the listener's line: not HTTP/1.x -> exit 1
    assert res.exit_code == 1 and b"HTTP/0.9" in res.stderr and not res.timed_out


def test_port_forward_to_a_speak_first_listener_never_breaks_under_repetition(
    factory: ClientFactory,
) -> None:
    from ambientctl.collectors.kube import KubePortForwardTransport
    from ambientctl.collectors.specs import ZTUNNEL_ADMIN_ARGV

    t = KubePortForwardTransport(*ZTUNNEL, client_factory=factory)
    codes = {t.run(ZTUNNEL_ADMIN_ARGV, netns=None, timeout=10).exit_code for _ in range(20)}
    assert codes == {1}


def test_the_exec_stream_is_capped_by_the_transport_in_bounded_memory(
    factory: ClientFactory,
) -> None:
    # issue 11 §4: the peer sends 32 MiB of stdout over the WebSocket; the transport keeps
    # at most its cap (1000 bytes) while draining the stream, and still reads the status.
    import tracemalloc

    t = KubeExecTransport(APP[0], APP[1], client_factory=factory, max_output=1000)
    t.run(["true"], netns=None, timeout=10)  # client, config and TLS state allocated first
    tracemalloc.start()
    try:
        res = t.run(
            ["sh", "-c", "head -c 33554432 /dev/zero; exit 3"], netns=None, timeout=60
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        t.close()
    assert res.truncated and res.stdout == b"" and res.exit_code == 3
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes traced while streaming 32 MiB"
    under = KubeExecTransport(APP[0], APP[1], client_factory=factory, max_output=1000)
    small = under.run(["head", "-c", "1000", "/dev/zero"], netns=None, timeout=10)
    under.close()
    assert not small.truncated and small.stdout == b"\0" * 1000


def test_a_truncated_kube_exec_is_recorded_in_the_manifest(
    factory: ClientFactory, tmp_path: Path
) -> None:
    import json

    from ambientctl.collectors.runner import CollectOptions, Plan, Target, collect_bundle
    from ambientctl.collectors.specs import CommandSpec

    spec = CommandSpec("big", "ipset.txt", ("head", "-c", "50000", "/dev/zero"))
    rule = CommandSpec("rule", "ip-rule.json", ("ip", "-j", "rule"))  # one kept output
    target = Target.pod_target("ambient-worker2", APP[0], APP[1], NetnsRef())
    t = KubeExecTransport(APP[0], APP[1], client_factory=factory)
    # The cap is a collection option (`--max-output-bytes`); collect_bundle hands it to the
    # transport, which enforces it while streaming.
    collect_bundle(
        t, Plan((target,), (spec, rule), ()), str(tmp_path / "b"), collection={"mode": "kube"},
        options=CollectOptions(max_output=4096),
    )
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    entry = next(e for e in manifest["entries"] if e["spec"] == "ipset.txt")
    assert entry["status"] == "truncated" and entry["path"] is None
    assert "cap of 4096 bytes" in entry["note"]
    assert manifest["collection"]["max_output_bytes"] == 4096
    assert not (tmp_path / "b" / target.dir / "ipset.txt").exists()
