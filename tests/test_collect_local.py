"""`ambientctl collect --local`, the runner, the local transport and the bundle writer.

Kernel tests collect the seed lab (real namespaces) and open the result with the
project's reader; the others drive the runner and writer with a scripted transport.
"""

from __future__ import annotations

import _thread
import calendar
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import jsonschema
import pytest

from ambientctl.bundle import layout
from ambientctl.bundle.reader import open_bundle
from ambientctl.bundle.writer import write_bundle, write_tarball
from ambientctl.collectors import specs as specs_mod
from ambientctl.collectors.local import LocalTransport
from ambientctl.collectors.runner import Plan, Runner, Target
from ambientctl.collectors.transport import NetnsRef
from ambientctl.errors import ExitCode, UsageError
from ambientctl.raw import ExecResult, RawOutput, RawStatus

REPO = Path(__file__).resolve().parents[1]
# legacy dumps are dropped; optional tools (ipvsadm) are not installed on this machine
STORED = {s.file for s in specs_mod.NETNS_SPECS if s.keep is None and not s.optional}
N_SPECS = len(specs_mod.NETNS_SPECS)
# Nodes also run the node-only commands (ipvsadm): per-kind counts.
N_NODE = len(specs_mod.specs_for("node"))
N_POD = len(specs_mod.specs_for("pod"))


def _cli(*args: str, netns: str | None = None, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m ambientctl ARGS`, optionally with the current netns = `netns`."""
    argv = [sys.executable, "-m", "ambientctl", *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    full_env = dict(os.environ, PYTHONPATH=str(REPO))
    full_env.update(env or {})
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=full_env,
                          timeout=timeout, check=False)


def _entries(bundle_path: str | Path) -> list[dict]:
    b = open_bundle(str(bundle_path))
    try:
        assert b.manifest is not None
        return list(b.manifest["entries"])  # type: ignore[arg-type]
    finally:
        b.close()


# --------------------------------------------------------------------------- the catalogue

WRITE_TOKENS = {
    # iptables family: every rule/chain/policy changing command
    "-A", "--append", "-I", "--insert", "-D", "--delete", "-R", "--replace", "-F", "--flush",
    "-Z", "--zero", "-N", "--new-chain", "-X", "--delete-chain", "-P", "--policy", "-E",
    "--rename-chain",
    # ip / ipset / nft verbs
    "add", "del", "delete", "flush", "set", "change", "replace", "append", "prepend",
    "insert", "create", "destroy", "swap", "rename", "restore", "save-to", "import", "reset",
    "exec", "attach", "detach",
    # sysctl writes, nft/ipset scripts, ss socket killing
    "-w", "--write", "-p", "--load", "--system", "-f", "--file", "-K", "--kill",
}


def _commands(argv: tuple[str, ...]) -> list[tuple[str, ...]]:
    """argv itself, or for a catalogue `sh -c SCRIPT` every nft command the script runs
    (tests/test_transport_batch.py also proves it starts nothing else and writes no file)."""
    if argv[:2] != ("sh", "-c"):
        return [argv]
    found = [tuple(shlex.split(m.group(1))) for m in re.finditer(
        r"(?:^|[;|&{]|\b(?:do|then|else))\s*(nft\b[^;|&]*)", argv[2])]
    assert found and all(c[1:] for c in found), argv
    return found


def test_the_command_catalogue_is_read_only() -> None:
    argvs = specs_mod.all_argv()
    assert len(argvs) == N_SPECS + len(specs_mod.VERSION_SPECS)
    for argv in (c for a in argvs for c in _commands(a)):
        tool, *args = argv
        # `ss -Hltnp` is one bundle of flags: -p there means "show processes"
        tokens = set(args) if tool != "ss" else {a for a in args if not a.startswith("-H")}
        assert not (tokens & WRITE_TOKENS), argv
        assert not any(t.endswith("-restore") for t in argv), argv
        assert not any("=" in t for t in argv), argv  # `sysctl k=v` writes
    assert ("ss", "-Hltnp") in argvs and ("sysctl", "net") in argvs


def test_catalogue_files_are_bundle_layout_names() -> None:
    files = [s.file for s in specs_mod.NETNS_SPECS]
    assert len(files) == len(set(files))
    assert set(files) <= set(layout.NETNS_FILES)


# --------------------------------------------------------------------------- kernel: the lab


@pytest.fixture(scope="module")
def lab_bundle(lab, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("collect") / "seed-bundle"
    res = lab.collect(str(out))
    return out, res


@pytest.mark.kernel
def test_collecting_the_lab_writes_a_complete_verified_bundle(lab, lab_bundle) -> None:
    out, res = lab_bundle
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out)  # the path, and only the path, on stdout
    bundle = open_bundle(str(out))
    try:
        manifest = bundle.manifest
        assert manifest is not None and manifest["schema"] == "ambientctl.bundle/v1"
        schema = json.loads((REPO / "docs/schemas/bundle-manifest-v1.json").read_text())
        jsonschema.validate(manifest, schema, cls=jsonschema.Draft202012Validator)
        assert manifest["partial"] is False
        assert bundle.verify() == []
        entries = manifest["entries"]
        targets = manifest["targets"]
        assert len(targets) == 12  # 2 nodes + 10 pods
        netns_entries = [e for e in entries if e["target"] != "cluster"]
        assert len(netns_entries) == 2 * N_NODE + 10 * N_POD  # every planned command has an entry
        for e in netns_entries:
            if e["argv"][0] == "ipvsadm" and e["status"] == "skipped":  # not installed here
                assert e["path"] is None and e["note"].startswith("not found"), e
                assert e["optional_absent"] is True, e  # said by the runner, not the note
                continue
            assert e["status"] == "ok", e
            assert e["transport"] == "local" and e["wrapper"][:3] == ["ip", "netns", "exec"]
            if e["spec"].startswith(("iptables-legacy", "ip6tables-legacy")):
                assert e["path"] is None and e["note"]  # ran fine, printed no table
            else:
                data = bundle.read_bytes(e["path"])
                assert e["size"] == len(data)
        # per namespace, the same file set
        for t in targets:
            present = {p.rsplit("/", 1)[1] for p in bundle.paths() if p.startswith(t["dir"] + "/")}
            assert present == STORED, t["id"]
        # versions of the tools, per node
        node = next(t for t in targets if t["id"] == "node/ambient-worker")
        assert node["tool_versions"]["iptables"].startswith("iptables v")
        assert node["tool_versions"]["kernel"] == os.uname().release
        # the cluster files, hashed like the rest
        cluster = {e["path"]: e for e in entries if e["target"] == "cluster"}
        assert set(cluster) == set(layout.CLUSTER_FILES.values())
        assert json.loads(bundle.read_text("cluster/pods.json"))["kind"] == "List"
    finally:
        bundle.close()


@pytest.mark.kernel
def test_bundle_holds_each_namespaces_own_state(lab_bundle) -> None:
    out, _ = lab_bundle
    b = open_bundle(str(out))
    try:
        w2 = "nodes/ambient-worker2/host"
        rules = json.loads(b.read_text(f"{w2}/ip-rule.json"))
        assert {r["priority"] for r in rules} >= {100, 101, 102, 103}
        assert "10.244.1.9" in b.read_text(f"{w2}/ipset.txt")
        zt = "nodes/ambient-worker/pods/istio-system/ztunnel-nptf6"
        assert "--on-port 15001" in b.read_text(f"{zt}/iptables-save.txt")
        assert "127.0.0.1:15001" in b.read_text(f"{zt}/ss-listen.txt")
        assert "net.ipv4.conf.pistioout.rp_filter = 0" in b.read_text(f"{zt}/sysctl.txt")
        sleep = "nodes/ambient-worker/pods/default/sleep-7b85956664-z6qh7"
        # empty is not missing: a pod without sets or listeners has 0-byte files
        assert b.read_bytes(f"{sleep}/ipset.txt") == b""
        assert b.read_bytes(f"{sleep}/ss-listen.txt") == b""
        addrs = json.loads(b.read_text(f"{sleep}/ip-addr.json"))
        assert any(a["local"] == "10.244.2.4" for i in addrs for a in i["addr_info"])
    finally:
        b.close()


@pytest.mark.kernel
def test_tampering_is_found_by_bundle_verify(lab_bundle, tmp_path: Path) -> None:
    out, _ = lab_bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert _cli("bundle", "verify", str(copy)).returncode == 0
    victim = copy / "nodes/ambient-worker/host/ipset.txt"
    victim.write_text(victim.read_text().replace("10.244.2.4", "10.244.2.9"))
    (copy / "nodes/ambient-worker/host/extra.txt").write_text("x")
    res = _cli("bundle", "verify", str(copy))
    assert res.returncode == ExitCode.BUNDLE
    lines = res.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("nodes/ambient-worker/host/extra.txt: not listed")
    assert lines[1].startswith("nodes/ambient-worker/host/ipset.txt: sha256")


@pytest.mark.kernel
def test_tarball_output_is_deterministic_and_readable(lab_bundle, tmp_path: Path) -> None:
    out, _ = lab_bundle
    created = open_bundle(str(out)).manifest["created_at"]  # type: ignore[index]
    mtime = calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    write_tarball(out, str(a), top="seed", mtime=mtime)
    time.sleep(1.1)  # a second later: nothing time-dependent may leak in
    write_tarball(out, str(b), top="seed", mtime=mtime)
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and all(n.startswith("seed/") for n in names)
    assert all(m.isfile() and m.mode == 0o644 and m.uid == m.gid == 0 and m.mtime == mtime
               for m in members)
    assert a.read_bytes()[4:8] == b"\0\0\0\0"  # gzip header mtime
    opened = open_bundle(str(a))
    try:
        assert opened.verify() == []
        assert opened.paths() == open_bundle(str(out)).paths()
    finally:
        opened.close()


@pytest.mark.kernel
def test_collect_to_tar_gz_renames_into_place(lab, tmp_path: Path) -> None:
    res = lab.collect(str(tmp_path / "seed.tar.gz"), "-q")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # -q
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.tar.gz"]  # no temp left
    with tarfile.open(tmp_path / "seed.tar.gz") as tar:
        assert {m.name.split("/")[0] for m in tar.getmembers()} == {"seed"}


def _shim_path(tmp_path: Path, *, drop: Sequence[str] = (), slow: Sequence[str] = ()) -> str:
    """A PATH directory with the real tools, minus `drop`, with `slow` ones that hang."""
    shim = tmp_path / "bin"
    shim.mkdir()
    needed = specs_mod.programs() | {"ip", "nsenter"}
    for tool in needed - set(drop):
        real = shutil.which(tool)
        if real:
            (shim / tool).symlink_to(real)
    for tool in slow:
        (shim / tool).unlink(missing_ok=True)
        script = shim / tool
        # the child `sleep` is what a timeout must also kill (same process group)
        script.write_text(f"#!/bin/sh\nsleep {HANG}\n")
        script.chmod(0o755)
    if not (shim / "sh").exists():
        (shim / "sh").symlink_to(shutil.which("sh"))
    (shim / "sleep").symlink_to(shutil.which("sleep"))
    return str(shim)


HANG = "61.4242"  # an unusual duration: pgrep finds the hanging command by it


def _hangers() -> list[str]:
    res = subprocess.run(["pgrep", "-f", f"sleep {HANG}"], capture_output=True, text=True, check=False)
    return res.stdout.split()


@pytest.mark.kernel
def test_failures_are_entries_and_the_rest_is_kept(lab, tmp_path: Path) -> None:
    """A missing binary, a command that hangs and an unknown netns: exit 7, bundle kept."""
    host = lab.netns_name("ambient-worker/host")  # the "current" netns of this collect
    out = tmp_path / "partial"
    res = _cli(
        "collect", "--local", "--node-name", "ambient-worker", "--timeout", "1",
        "--pod", f"{lab.netns_name('ambient-worker/pod/default/sleep-7b85956664-z6qh7')}"
                 "=default/sleep-7b85956664-z6qh7",
        "--pod", "amb000000-no-such-netns=default/ghost",
        "-o", str(out),
        netns=host,
        env={"PATH": _shim_path(tmp_path, drop=["ipset"], slow=["ss"])},
    )
    assert res.returncode == ExitCode.PARTIAL, res.stderr
    assert "bundle marked partial" in res.stderr
    entries = _entries(out)
    by = {(e["target"], e["spec"]): e for e in entries}
    assert len(entries) == N_NODE + 2 * N_POD
    for target in ("node/ambient-worker", "pod/default/sleep-7b85956664-z6qh7"):
        ipset = by[(target, "ipset.txt")]
        assert (ipset["status"], ipset["path"], ipset["sha256"]) == ("not-found", None, None)
        ss = by[(target, "ss-listen.txt")]
        assert (ss["status"], ss["path"]) == ("timeout", None)
        assert 900 <= ss["duration_ms"] < 5000
        assert by[(target, "iptables-save.txt")]["status"] == "ok"  # the rest is kept
    ghost = [e for e in entries if e["target"] == "pod/default/ghost"]
    assert {e["status"] for e in ghost} == {"transport-error"}
    assert "amb000000-no-such-netns" in ghost[0]["note"]
    assert all(e["path"] is None for e in ghost)
    manifest = open_bundle(str(out)).manifest
    assert manifest["partial"] is True  # type: ignore[index]
    # the node's host netns was the current one: no wrapper
    assert by[("node/ambient-worker", "ip-rule.json")]["wrapper"] == []
    assert (out / "nodes/ambient-worker/host/ip-rule.json").is_file()
    assert _hangers() == []  # the timed-out command's whole process group was killed


def test_nothing_collected_is_exit_3_and_no_bundle(tmp_path: Path) -> None:
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps({"nodes": [{"name": "n1", "host_netns": "amb000000-gone"}]}))
    out = tmp_path / "never"
    res = _cli("collect", "--local", "--targets", str(targets), "-o", str(out))
    assert res.returncode == ExitCode.COLLECTION
    assert res.stderr.startswith("error: nothing could be collected")
    assert not out.exists() and not Path(f"{out}.partial").exists()


@pytest.mark.kernel
def test_interrupt_writes_a_partial_bundle_and_exits_130(lab, tmp_path: Path) -> None:
    host = lab.netns_name("ambient-worker2/host")
    out = tmp_path / "interrupted"
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=_shim_path(tmp_path, slow=["ss"]))
    proc = subprocess.Popen(
        ["ip", "netns", "exec", host, sys.executable, "-m", "ambientctl", "collect", "--local",
         "--node-name", "ambient-worker2", "--timeout", "60", "-o", str(out)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not _hangers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _hangers(), "ss never started"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    assert stdout.strip() == str(out)
    entries = _entries(out)
    assert open_bundle(str(out)).manifest["partial"] is True  # type: ignore[index]
    by = {e["spec"]: e for e in entries}
    assert by["ss-listen.txt"]["status"] == "skipped" and by["ss-listen.txt"]["note"] == "interrupted"
    assert by["iptables-save.txt"]["status"] == "ok"  # collected before the interrupt: kept
    assert _hangers() == []


def test_targets_and_names_are_validated_before_use(tmp_path: Path) -> None:
    bad_node = _cli("collect", "--local", "--node-name", "Bad_Name", "-o", str(tmp_path / "x"))
    assert bad_node.returncode == ExitCode.USAGE and "invalid node name" in bad_node.stderr
    bad_pod = _cli("collect", "--local", "--node-name", "n", "--pod", "ns=default/../etc",
                   "-o", str(tmp_path / "y"))
    assert bad_pod.returncode == ExitCode.USAGE
    targets = tmp_path / "t.json"
    targets.write_text(json.dumps({"nodes": [{"name": "n", "host_netns": "x;rm"}]}))
    bad_netns = _cli("collect", "--local", "--targets", str(targets), "-o", str(tmp_path / "z"))
    assert bad_netns.returncode == ExitCode.USAGE and "invalid network namespace" in bad_netns.stderr
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "f").write_text("x")
    res = _cli("collect", "--local", "--node-name", "n", "-o", str(existing))
    assert res.returncode == ExitCode.USAGE and "already exists" in res.stderr
    assert not list(tmp_path.glob("*.partial"))


# --------------------------------------------------------------------------- runner, no kernel


class ScriptedTransport:
    """A transport whose commands return canned results and record their concurrency."""

    name = "scripted"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.active_targets: dict[str, int] = {}
        self.max_targets = 0
        self.overlap_in_target = False
        self.closed = threading.Event()
        self.calls = 0
        self.interrupt_on_call: int | None = None

    def run(self, argv: Sequence[str], *, netns: NetnsRef | None, timeout: float) -> ExecResult:
        key = netns.name if netns and netns.name else "current"
        with self.lock:
            self.calls += 1
            call = self.calls
            n = self.active_targets.get(key, 0)
            self.overlap_in_target |= n > 0
            self.active_targets[key] = n + 1
            self.max_targets = max(self.max_targets, sum(1 for v in self.active_targets.values() if v))
        try:
            if self.interrupt_on_call == call:
                _thread.interrupt_main()
                self.closed.wait(10)  # close() "kills" it, like the local transport does
                return ExecResult(-9, b"", b"", 0)
            if self.delay:
                time.sleep(self.delay)
            if key == "unreachable":
                from ambientctl.errors import TransportError

                raise TransportError("no route to target")
            if argv[0] == "ipset":
                return ExecResult(None, b"", b"ipset: not found", 0, not_found=True)
            if argv[0] == "ss":
                return ExecResult(-9, b"partial", b"", 1000, timed_out=True)
            if argv[0] == "sysctl":
                return ExecResult(1, b"", b"sysctl: permission denied\n" * 2000, 3)
            if argv[0] == "iptables-legacy-save":
                return ExecResult(0, b"", b"", 1)
            if argv[:2] == ("ip", "-j"):
                return ExecResult(0, b"", b"", 1)  # empty output: still a file
            return ExecResult(0, f"{' '.join(argv)} in {key}\n".encode(), b"", 2)
        finally:
            with self.lock:
                self.active_targets[key] -= 1

    def close(self) -> None:
        self.closed.set()


def _plan(n_pods: int = 0, unreachable: bool = False) -> Plan:
    targets = [Target.node_target("n1", NetnsRef(name="node-ns"))]
    targets += [Target.pod_target("n1", "default", f"p{i}", NetnsRef(name=f"pod-ns-{i}"))
                for i in range(n_pods)]
    if unreachable:
        targets.append(Target.pod_target("n1", "default", "far", NetnsRef(name="unreachable")))
    return Plan(tuple(targets))


def test_runner_bounds_concurrency_and_serialises_each_netns() -> None:
    transport = ScriptedTransport(delay=0.005)
    result = Runner(transport, concurrency=3).run(_plan(n_pods=9))
    assert transport.max_targets == 3
    assert not transport.overlap_in_target  # one command at a time per netns (xtables lock)
    assert len(result.outputs) == N_NODE + 9 * N_POD
    assert [o.target for o in result.outputs[:N_NODE]] == ["node/n1"] * N_NODE  # plan order


def test_runner_maps_every_outcome_to_a_status() -> None:
    result = Runner(ScriptedTransport()).run(_plan(unreachable=True))
    by = {(o.target, o.path.rsplit("/", 1)[1]): o for o in result.outputs}
    node = "node/n1"
    assert by[(node, "ipset.txt")].status is RawStatus.NOT_FOUND
    assert by[(node, "ss-listen.txt")].status is RawStatus.TIMEOUT
    assert by[(node, "sysctl.txt")].status is RawStatus.NONZERO_EXIT
    assert by[(node, "iptables-save.txt")].status is RawStatus.OK
    far = [o for o in result.outputs if o.target == "pod/default/far"]
    assert {o.status for o in far} == {RawStatus.TRANSPORT_ERROR}
    assert all(o.note == "no route to target" for o in far)
    assert "nodes/n1/host/iptables-legacy-save.txt" in result.not_kept
    assert result.versions["node/n1"][0].tool == "iptables"



def test_a_run_hands_its_refused_paths_over_once() -> None:
    """Why: a spec's `keep` refuses about two outputs a pod (a path each: 3.5 MiB at
    200 x 50), and the run copied that set into its result while keeping its own (the
    runner lives as long as the write): two sets held through the write, not one."""
    runner = Runner(ScriptedTransport())
    result = runner.run(_plan())
    assert "nodes/n1/host/iptables-legacy-save.txt" in result.not_kept
    assert not runner._not_kept  # handed over, not copied

def test_writer_stores_ok_outputs_only_and_records_everything(tmp_path: Path) -> None:
    result = Runner(ScriptedTransport()).run(_plan())
    written = write_bundle(
        str(tmp_path / "b"), outputs=result.outputs, created_at="2022-10-12T07:34:33Z",
        collection={"mode": "test"}, targets=[], not_kept=result.not_kept,
    )
    root = tmp_path / "b"
    entries = {e["spec"]: e for e in written.manifest["entries"]}
    assert (root / "nodes/n1/host/ip-rule.json").read_bytes() == b""  # empty is not missing
    assert entries["ip-rule.json"]["size"] == 0 and entries["ip-rule.json"]["sha256"]
    assert not (root / "nodes/n1/host/ss-listen.txt").exists()  # timed out: nothing stored
    assert entries["ss-listen.txt"]["path"] is None
    assert not (root / "nodes/n1/host/iptables-legacy-save.txt").exists()
    assert entries["iptables-legacy-save.txt"]["status"] == "ok"
    sysctl = entries["sysctl.txt"]
    assert sysctl["stderr_truncated"] and len(sysctl["stderr"]) <= 4096
    assert written.partial and {e["spec"] for e in written.failed} == {
        "ipset.txt", "ss-listen.txt", "ss-listen-udp.txt", "sysctl.txt"}
    assert not (tmp_path / "b.partial").exists()
    assert open_bundle(str(root)).verify() == []


def test_interrupt_marks_unfinished_commands_skipped(tmp_path: Path) -> None:
    transport = ScriptedTransport()
    transport.interrupt_on_call = 3
    result = Runner(transport, concurrency=1).run(_plan(n_pods=2))
    assert result.interrupted
    statuses = [o.status for o in result.outputs]
    assert statuses[:2] == [RawStatus.OK, RawStatus.OK]
    assert statuses[2] is RawStatus.SKIPPED and result.outputs[2].note == "interrupted"
    assert set(statuses[3:]) == {RawStatus.SKIPPED}
    assert len(result.outputs) == N_NODE + 2 * N_POD  # every planned command still has an entry


def test_writer_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("x")
    with pytest.raises(UsageError, match="already exists"):
        write_bundle(str(tmp_path / "b"), outputs=[], created_at="2022-10-12T07:34:33Z",
                     collection={}, targets=[])


def test_local_transport_kills_the_whole_process_group_on_timeout() -> None:
    res = LocalTransport().run(["sh", "-c", "sleep 30 & echo $!; wait"], netns=None, timeout=0.5)
    assert res.timed_out and res.exit_code is not None
    child = int(res.stdout.split()[0])
    time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or "Z (zombie)" in Path(f"/proc/{child}/status").read_text()


def test_local_transport_reports_missing_binaries_and_namespaces() -> None:
    transport = LocalTransport()
    missing = transport.run(["no-such-tool-xyz"], netns=None, timeout=1)
    assert missing.not_found and missing.exit_code is None
    from ambientctl.errors import TransportError

    with pytest.raises(TransportError, match="not found"):
        transport.run(["true"], netns=NetnsRef(name="amb000000-none"), timeout=1)


def test_raw_output_is_stored_byte_for_byte(tmp_path: Path) -> None:
    data = b"\xff\xfe not utf-8 \r\n trailing spaces   \n"
    out = RawOutput(path="nodes/n/host/iptables-save.txt", target="node/n", argv=("iptables-save",),
                    transport="t", status=RawStatus.OK, exit_code=0, stdout=data, stderr=b"",
                    started_at="2022-10-12T07:34:33.000000Z", duration_ms=1)
    write_bundle(str(tmp_path / "b"), outputs=[out], created_at="2022-10-12T07:34:33Z",
                 collection={}, targets=[])
    assert (tmp_path / "b/nodes/n/host/iptables-save.txt").read_bytes() == data


@pytest.mark.kernel
def test_local_collection_records_each_targets_netns_inode(lab, lab_bundle) -> None:
    out, _ = lab_bundle
    manifest = json.loads((out / "manifest.json").read_text())
    want = {}
    for node in lab.targets()["nodes"]:
        want[f"node/{node['name']}"] = os.stat(f"/var/run/netns/{node['host_netns']}").st_ino
        for pod in node["pods"]:
            want[f"pod/{pod['namespace']}/{pod['name']}"] = os.stat(
                f"/var/run/netns/{pod['netns']}").st_ino
    got = {t["id"]: t["netns_inode"] for t in manifest["targets"] if t["kind"] != "ztunnel"}
    assert got == want
    assert "netns_conflicts" not in manifest["collection"]
