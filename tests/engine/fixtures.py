"""pytest fixtures: a private dockerd, the kind-node image and the seed lab in containers.

Everything is module-scoped and always torn down (containers, daemon, mounts, the lab's
namespaces). Where dockerd cannot start (not root, docker.io or debootstrap missing, the
mirror unreachable) the tests skip with that reason; the tests are marked `kernel`, so
under AMBIENTCTL_REQUIRE_KERNEL=1 (CI) such a skip is a failure.

`ENGINE_TIMINGS` records what the build cost (image cold/warm, daemon start, lab build),
which the tests print with `-s` and the report quotes.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import ENGINE_TIMINGS, KIND_CLUSTER


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """A private dockerd (`ambientlab.docker_engine.Dockerd`)."""
    from ambientlab.docker_engine import Dockerd, EngineUnavailable, engine_unavailable

    reason = engine_unavailable()
    if reason:
        pytest.skip(f"no Docker Engine here: {reason}")
    started = time.monotonic()
    try:
        daemon = Dockerd()
        daemon.__enter__()
    except EngineUnavailable as exc:
        pytest.skip(f"dockerd cannot start here: {exc}")
    ENGINE_TIMINGS["dockerd_start_s"] = time.monotonic() - started
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.fixture(scope="module")
def kind_image(engine: Any) -> str:
    """The kind-node image, imported into `engine` (built first where not cached)."""
    from ambientlab.docker_engine import EngineUnavailable, kind_node_rootfs

    started = time.monotonic()
    try:
        rootfs = kind_node_rootfs()
    except EngineUnavailable as exc:
        pytest.skip(f"cannot build the kind-node image: {exc}")
    ENGINE_TIMINGS["rootfs_s"] = time.monotonic() - started
    started = time.monotonic()
    tag = engine.import_image(rootfs)
    ENGINE_TIMINGS["import_s"] = time.monotonic() - started
    return str(tag)


@pytest.fixture(scope="module")
def kind_lab(engine: Any, kind_image: str) -> Iterator[Any]:
    """The seed lab's two worker nodes as kind node containers of `engine`."""
    from ambientlab.docker_kind import DockerSeedLab

    started = time.monotonic()
    with DockerSeedLab(engine, kind_image, cluster=KIND_CLUSTER) as lab:
        ENGINE_TIMINGS["lab_build_s"] = time.monotonic() - started
        yield lab


@pytest.fixture(scope="module")
def engine_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ambientctl-engine-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def kubeconfig(kind_lab: Any, engine_dir: Path) -> Iterator[Path]:
    """A kubeconfig (context `kind-ambient`, as kind writes it) for an API server that
    serves the lab's cluster objects, so that pods are named and collected."""
    from tests.peers.kube_api import KubeApi
    from tests.peers.lab import lab_cluster

    with KubeApi(lab_cluster(), {}) as api:
        yield api.kubeconfig(engine_dir / "kubeconfig", context=f"kind-{KIND_CLUSTER}")
