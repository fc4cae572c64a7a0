"""pytest fixtures that stand the test peers up in front of a `SeedLab`.

A test module loads them with `pytest_plugins = ["tests.peers.fixtures"]` (plain helpers
live in `tests.peers.lab`); each module gets its own lab (it builds in well under a
second) and its own peers, all torn down at the end of the module.

What each peer sees of the lab:
- docker: one "kind node container" per lab node; exec runs in the node's netns with a
  /var/run/netns listing only that node's pods (`NodeView`), as inside `kind`'s nodes.
- kube: the lab's cluster objects (`ambientlab.cluster.documents()`); exec into a pod
  runs in that pod's netns. `lab.lab_cluster(with_cni=True)` adds one hostNetwork `istio-cni-node` pod per
  node (the seed's cluster had them: istio-cni-node-5rh5z ...) whose exec runs with the
  node's `NodeView`; the emulated istio-cni pod sees the host's netns directory at
  /var/run/netns (a real one mounts it at /host/var/run/netns), so tests pass
  `cni_netns_dir="/var/run/netns"`.
- sshd: one real sshd per node, started with the node's `NodeView`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.docker_engine import DockerEngine, kind_container
from tests.peers.kube_api import KubeApi
from tests.peers.lab import kube_exec_targets, lab_cluster
from tests.peers.netns import NodeView, node_views
from tests.peers.sshd import Sshd, sshd_available

KIND_CLUSTER = "ambient"


@pytest.fixture(scope="module")
def seed_lab() -> Iterator[Any]:
    """A SeedLab of this module's own (not the top-level conftest's `lab`)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the lab builds network namespaces")
    from ambientlab import SeedLab

    with SeedLab() as lab:
        yield lab


@pytest.fixture(scope="module")
def peer_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ambientctl-peers-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def views(seed_lab: Any, peer_dir: Path) -> dict[str, NodeView]:
    return node_views(seed_lab.targets(), str(peer_dir))


@pytest.fixture(scope="module")
def docker_peer(
    seed_lab: Any, views: dict[str, NodeView], peer_dir: Path
) -> Iterator[DockerEngine]:
    containers = [
        kind_container(KIND_CLUSTER, name, v.prefix()) for name, v in sorted(views.items())
    ]
    with DockerEngine(peer_dir / "docker.sock", containers) as engine:
        yield engine


@pytest.fixture(scope="module")
def kube_peer(seed_lab: Any, views: dict[str, NodeView], peer_dir: Path) -> Iterator[KubeApi]:
    """The API of the lab's cluster with istio-cni pods; kubeconfig at peer_dir/kubeconfig
    with contexts `peer` (current)."""
    docs = lab_cluster(with_cni=True)
    with KubeApi(docs, kube_exec_targets(seed_lab, views, docs)) as api:
        api.kubeconfig(peer_dir / "kubeconfig", context="peer")
        yield api


@pytest.fixture(scope="module")
def sshd_nodes(
    seed_lab: Any, views: dict[str, NodeView], peer_dir: Path
) -> Iterator[dict[str, Sshd]]:
    """A real sshd per lab node (sharing one client key), and a known_hosts for all."""
    reason = sshd_available()
    if reason:
        pytest.skip(reason)
    from tests.peers.sshd import keygen

    client = keygen(peer_dir / "id_client")
    started: dict[str, Sshd] = {}
    try:
        for name, view in sorted(views.items()):
            started[name] = Sshd(
                peer_dir / f"sshd-{name}",
                netns=view.host_netns,
                prefix=view.prefix(),
                client_pub=Path(f"{client}.pub"),
            )
        (peer_dir / "known_hosts").write_text(
            "".join(s.known_hosts_line() for s in started.values())
        )
        yield started
    finally:
        for s in started.values():
            s.close()
