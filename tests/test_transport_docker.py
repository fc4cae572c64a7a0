"""Docker transport against the Engine API test peer (the unmodified docker SDK on the
client side; a unix-socket server speaking the Engine API wire format on the other)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ambientctl.collectors.docker import DockerTransport
from ambientctl.collectors.transport import NetnsRef
from ambientctl.errors import TransportError
from tests.peers.docker_engine import DockerEngine, kind_container

pytestmark = pytest.mark.kernel
pytest_plugins = ["tests.peers.fixtures"]

NODE = "ambient-worker2"
POD = "default/productpage-v1-7c548b785b-w9zl6"


def pod_netns(lab: Any) -> NetnsRef:
    return NetnsRef(name=lab.netns_name(f"{NODE}/pod/{POD}"))


def test_the_unmodified_sdk_sees_the_kind_node_containers(docker_peer: DockerEngine) -> None:
    import docker

    client = docker.DockerClient(base_url=docker_peer.base_url)
    assert client.ping()
    names = sorted(
        c.name for c in client.containers.list(filters={"label": "io.x-k8s.kind.cluster=ambient"})
    )
    assert names == ["ambient-worker", "ambient-worker2"]
    assert client.containers.list(filters={"label": "io.x-k8s.kind.cluster=other"}) == []


def test_exec_runs_in_the_node_netns_and_separates_the_streams(
    docker_peer: DockerEngine, seed_lab: Any
) -> None:
    t = DockerTransport(NODE, base_url=docker_peer.base_url)
    res = t.run(
        ["sh", "-c", "ip -o -4 addr show dev eth0; echo to-stderr >&2; exit 3"],
        netns=None,
        timeout=10,
    )
    assert res.exit_code == 3 and not res.timed_out and not res.not_found
    assert b"172.18.0." in res.stdout and res.stderr == b"to-stderr\n"
    t.close()


def test_exec_enters_a_pod_netns_by_name_inside_the_node(
    docker_peer: DockerEngine, seed_lab: Any
) -> None:
    t = DockerTransport(NODE, base_url=docker_peer.base_url)
    res = t.run(
        ["ip", "-o", "-4", "addr", "show", "dev", "eth0"], netns=pod_netns(seed_lab), timeout=10
    )
    assert res.exit_code == 0 and b"10.244.1.7/24" in res.stdout
    # the node's /var/run/netns lists only its own pods, as inside a kind node
    other = NetnsRef(name=seed_lab.netns_name("ambient-worker/pod/default/sleep-7b85956664-z6qh7"))
    res = t.run(["ip", "-o", "addr"], netns=other, timeout=10)
    assert res.exit_code != 0 and b"sleep" in res.stderr


def test_a_binary_missing_in_the_container_is_not_found_not_a_failure(
    docker_peer: DockerEngine, seed_lab: Any
) -> None:
    t = DockerTransport(NODE, base_url=docker_peer.base_url)
    direct = t.run(["no-such-tool", "-x"], netns=None, timeout=10)
    assert direct.not_found and direct.exit_code == 127
    assert b"executable file not found" in direct.stdout  # dockerd writes it on the stream
    wrapped = t.run(["no-such-tool"], netns=pod_netns(seed_lab), timeout=10)
    assert wrapped.not_found


def test_a_hung_command_times_out_with_the_output_so_far(docker_peer: DockerEngine) -> None:
    t = DockerTransport(NODE, base_url=docker_peer.base_url)
    res = t.run(["sh", "-c", "echo first; sleep 20"], netns=None, timeout=1)
    assert res.timed_out and res.exit_code is None and res.stdout == b"first\n"
    assert 900 <= res.duration_ms < 5000


def test_output_arriving_with_the_upgrade_headers_is_not_lost(
    seed_lab: Any, views: Any, peer_dir: Any
) -> None:
    # docker/docker-py#3332: bytes read ahead with the "101 UPGRADED" headers sit in the
    # HTTP response's buffer; the SDK's own exec_start reads the raw socket and loses them.
    containers = [kind_container("ambient", NODE, views[NODE].prefix())]
    with DockerEngine(peer_dir / "coalesce.sock", containers, coalesce=True) as engine:
        import docker

        # Precondition (keeps this test from passing vacuously): the peer really delivers
        # the output together with the headers - the SDK's own exec_run sees nothing.
        sdk = docker.DockerClient(base_url=engine.base_url)
        assert sdk.containers.get(NODE).exec_run(["echo", "hello"]).output == b""
        t = DockerTransport(NODE, base_url=engine.base_url)
        for _ in range(5):
            res = t.run(["echo", "hello"], netns=None, timeout=10)
            assert res.stdout == b"hello\n" and res.exit_code == 0


def test_a_large_output_arrives_whole(docker_peer: DockerEngine) -> None:
    t = DockerTransport(NODE, base_url=docker_peer.base_url)
    res = t.run(["head", "-c", "5000000", "/dev/urandom"], netns=None, timeout=30)
    assert res.exit_code == 0 and len(res.stdout) == 5_000_000


def test_unknown_container_and_unreachable_engine_are_transport_errors(
    docker_peer: DockerEngine, peer_dir: Any
) -> None:
    with pytest.raises(TransportError, match="container nope not found"):
        DockerTransport("nope", base_url=docker_peer.base_url).run(["true"], netns=None, timeout=5)
    with pytest.raises(TransportError, match="cannot reach a Docker engine"):
        DockerTransport(NODE, base_url=f"unix://{peer_dir}/absent.sock").run(
            ["true"], netns=None, timeout=5
        )


def test_concurrent_transports_do_not_mix_outputs(docker_peer: DockerEngine) -> None:
    results: dict[int, bytes] = {}

    def work(i: int) -> None:
        t = DockerTransport(NODE, base_url=docker_peer.base_url)
        results[i] = t.run(
            ["sh", "-c", f"for j in 1 2 3; do echo {i}-$j; done"], netns=None, timeout=10
        ).stdout
        t.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == {i: f"{i}-1\n{i}-2\n{i}-3\n".encode() for i in range(16)}
