"""A sick target never hangs the collection: one deadline per target, honoured by every wait.

Each test stands up a real peer that hangs the way a sick node does - an SSH server that
never answers the exec request, a real sshd whose login shell hangs, a frozen kind node
behind the Engine API peer, a local command whose child escapes with setsid - and checks
that the collection ends within the target's deadline (plus a small margin), records the
truth in the manifest, and never retries a timed-out batch one command at a time.
Each hanging call runs in a thread joined with a generous bound, so a regression fails
the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ambientctl.collectors.local import LocalTransport
from ambientctl.collectors.ssh import SshEndpoint, SshTransport
from ambientctl.raw import RawStatus
from tests.peers.sshd import Sshd, StallingSshServer, sshd_available

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["tests.peers.fixtures"]


def bounded(fn: Callable[[], Any], limit: float) -> tuple[Any, float]:
    """fn() in a daemon thread; (its result, seconds taken); fails if it outlives `limit`."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    start = time.monotonic()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    took = time.monotonic() - start
    assert not t.is_alive(), f"still waiting after {limit:.0f}s: the wait ignores its deadline"
    if "error" in box:
        raise box["error"]
    return box.get("value"), took


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ambientctl", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": "/nonexistent/kubeconfig", **(env or {})},
        timeout=120,
    )


# --------------------------------------------------------------------------- ssh


@pytest.mark.skipif(sshd_available() is not None, reason=str(sshd_available()))
def test_an_ssh_server_that_never_answers_exec_costs_one_deadline(tmp_path: Path) -> None:
    with StallingSshServer(tmp_path / "stall") as server:
        known = tmp_path / "known_hosts"
        known.write_text(server.known_hosts_line())
        t = SshTransport(
            SshEndpoint(node="n1", host="127.0.0.1", port=server.port, user="root",
                        key_file=str(server.client_key)),
            known_hosts=str(known),
        )
        res, took = bounded(lambda: t.run(["ip", "-j", "rule"], netns=None, timeout=2), 20)
        t.close()
    assert server.exec_requests == 1
    assert res.timed_out and res.exit_code is None
    assert 1.9 < took < 5


@pytest.mark.kernel
@pytest.mark.skipif(sshd_available() is not None, reason=str(sshd_available()))
def test_a_hung_login_shell_costs_the_target_deadline_once(tmp_path: Path) -> None:
    # sshd runs every exec request through the user's login shell (bash for root), which
    # reads $BASH_ENV first: a profile that hangs is a hung login shell.
    hang = tmp_path / "hang.sh"
    hang.write_text("exec sleep 30\n")
    with Sshd(tmp_path / "sshd", extra_config=f"SetEnv BASH_ENV={hang}\n") as sshd:
        known = tmp_path / "known_hosts"
        known.write_text(sshd.known_hosts_line())
        out = tmp_path / "bundle"
        proc, took = bounded(
            lambda: cli(
                "collect", "--ssh", f"n1=root@127.0.0.1:{sshd.port}",
                "--ssh-key", str(sshd.client_key), "--ssh-known-hosts", str(known),
                "--timeout", "1", "--target-timeout", "4", "-q", "-o", str(out),
            ),
            100,
        )
    # Before: the batch (1 s x 24 commands), then every command again one by one.
    assert took < 4 + 8, proc.stderr
    assert proc.returncode == 3, proc.stderr  # nothing collected: one line, no bundle
    assert "n1" in proc.stderr and "deadline" in proc.stderr


# --------------------------------------------------------------------------- docker


@pytest.mark.kernel
def test_a_frozen_kind_node_costs_the_target_deadline_once(tmp_path: Path, lab: Any) -> None:
    from ambientctl.collectors.live import LiveOptions, collect_live
    from tests.peers.docker_engine import DockerEngine, kind_container

    # A frozen node (cgroup freezer, SIGSTOP): every exec starts and then nothing runs,
    # not even the batch's own `timeout`. One healthy node beside it must be kept.
    frozen = ["sh", "-c", 'kill -STOP $$; exec "$@"', "frozen"]
    host_netns = lab.netns_name("ambient-worker/host")
    healthy = ["ip", "netns", "exec", host_netns]
    containers = [
        kind_container("sick", "frozen-node", frozen),
        kind_container("sick", "healthy-node", healthy),
    ]
    with DockerEngine(tmp_path / "docker.sock", containers) as engine:
        opts = LiveOptions(kind="sick", docker_host=engine.base_url,
                           kubeconfig="/nonexistent/kubeconfig", timeout=1, target_timeout=3)
        out = tmp_path / "bundle"
        written, took = bounded(lambda: collect_live(opts, str(out)), 60)
        frozen_execs = sum(1 for e in engine.execs.values() if e.container.name == "frozen-node")
    assert took < 3 + 6
    manifest = json.loads((out / "manifest.json").read_text())
    node = next(t for t in manifest["targets"] if t["id"] == "node/frozen-node")
    assert "deadline_reached_at" in node
    entries = [e for e in manifest["entries"] if e["target"] == "node/frozen-node"]
    assert entries and all(e["status"] == "timeout" for e in entries)
    assert all("deadline (3s for all its commands" in e["note"] for e in entries)
    assert manifest["collection"]["target_timeout_s"] == 3
    # one discovery round trip + one batch: never one exec per command
    assert frozen_execs <= 2
    ok = [e for e in manifest["entries"] if e["target"] == "node/healthy-node"]
    assert any(e["status"] == "ok" for e in ok)
    assert written.partial


# --------------------------------------------------------------------------- local


def test_a_local_command_whose_child_calls_setsid_is_killed_at_the_timeout(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "escaped.pid"
    script = f"echo started; setsid sh -c 'echo $$ > {pidfile}; exec sleep 60' & sleep 60"
    res, took = bounded(
        lambda: LocalTransport().run(["sh", "-c", script], netns=None, timeout=1), 30
    )
    assert res.timed_out and res.stdout == b"started\n"
    assert took < 1 + 4
    pid = pidfile.read_text().strip()
    time.sleep(0.2)
    alive = os.path.exists(f"/proc/{pid}") and " Z " not in Path(f"/proc/{pid}/stat").read_text()
    assert not alive, "the escaped child outlived the timeout"


def test_the_target_deadline_caps_every_command_and_is_recorded(tmp_path: Path) -> None:
    from ambientctl.collectors.runner import Plan, Runner, Target
    from ambientctl.collectors.specs import CommandSpec
    from ambientctl.collectors.transport import NetnsRef

    specs = tuple(
        CommandSpec(f"slow{i}", f"slow{i}.txt", ("sleep", str(10 + i))) for i in range(5)
    )
    target = Target.node_target("n1", NetnsRef())
    runner = Runner(LocalTransport(), timeout=5, target_timeout=2)
    result, took = bounded(lambda: runner.run(Plan((target,), specs, versions=())), 30)
    assert took < 2 + 3  # not 5 s x 5 commands
    statuses = [o.status for o in result.outputs]
    assert statuses == [RawStatus.TIMEOUT] * 5
    assert "target's deadline (2s" in (result.outputs[0].note or "")
    assert all((o.note or "").startswith("not run:") for o in result.outputs[1:])
    assert "node/n1" in result.deadline_reached


def test_cli_help_default_target_timeout_is_the_runners() -> None:
    from ambientctl.cli.source import DEFAULT_TARGET_TIMEOUT as shown
    from ambientctl.collectors.runner import DEFAULT_TARGET_TIMEOUT

    assert shown == DEFAULT_TARGET_TIMEOUT


# --------------------------------------------------------------------------- kubernetes


@pytest.mark.kernel
def test_frozen_pods_behind_the_kubernetes_api_cost_the_target_deadline(
    tmp_path: Path, seed_lab: Any, views: Any
) -> None:
    from ambientctl.collectors.live import LiveOptions, collect_live
    from ambientctl.errors import CollectionError
    from tests.peers.kube_api import ExecTarget, KubeApi
    from tests.peers.lab import kube_exec_targets, lab_cluster

    docs = lab_cluster(with_cni=True)
    frozen = ["sh", "-c", 'kill -STOP $$; exec "$@"', "frozen"]
    targets = {
        key: ExecTarget(frozen, t.binaries)
        for key, t in kube_exec_targets(seed_lab, views, docs).items()
    }
    with KubeApi(docs, targets) as api:
        api.kubeconfig(tmp_path / "kubeconfig", context="peer")
        opts = LiveOptions(kubeconfig=str(tmp_path / "kubeconfig"), context="peer",
                           cni_netns_dir="/var/run/netns", timeout=1, target_timeout=3)
        out = tmp_path / "bundle"

        def attempt() -> str:
            with pytest.raises(CollectionError) as err:
                collect_live(opts, str(out))
            return err.value.message

        message, took = bounded(attempt, 120)
    # Every exec is frozen: nothing collected, and the one-line reason is the deadline.
    assert "nothing could be collected" in message and "deadline (3s" in message
    # discovery (<= 3 s) + one deadline per target, targets concurrent: not 24 x 1 s each
    assert took < 3 + 3 * 2 + 6
    assert not out.exists()
