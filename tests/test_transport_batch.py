"""The batch: one round trip per target, a fixed script, split back byte for byte.

Also the proof that the remote transports can only emit read-only commands: every argv
the batch and discovery scripts can run is the catalogue's, and none is a write verb.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence

import pytest

from ambientctl.collectors import batch
from ambientctl.collectors.batch import (
    CATALOGUE,
    DISCOVERY_SCRIPT,
    SCRIPT,
    BatchingTransport,
    batch_argv,
    discovery_argv,
    new_nonce,
    split_batch,
)
from ambientctl.collectors.specs import NETNS_SPECS, VERSION_SPECS
from ambientctl.collectors.transport import NetnsRef
from ambientctl.errors import UsageError
from ambientctl.raw import ExecResult

# Write verbs of every tool in the catalogue (iptables/ip6tables/-legacy, ip, ipset, nft,
# sysctl, ss): the options and sub-commands that change kernel state.
IPTABLES_WRITES = {
    "-A",
    "-I",
    "-D",
    "-R",
    "-F",
    "-X",
    "-N",
    "-E",
    "-P",
    "-Z",
    "--append",
    "--insert",
    "--delete",
    "--flush",
    "--new-chain",
    "--policy",
    "--zero",
}
IP_WRITES = {
    "add",
    "del",
    "delete",
    "change",
    "replace",
    "set",
    "flush",
    "append",
    "prepend",
    "exec",
    "attach",
    "restore",
    "save",
}
IPSET_WRITES = {"create", "add", "del", "destroy", "flush", "rename", "swap", "restore", "-exist"}
NFT_WRITES = {
    "add",
    "create",
    "insert",
    "delete",
    "destroy",
    "flush",
    "replace",
    "reset",
    "rename",
    "-f",
    "--file",
    "import",
}
SYSCTL_WRITES = {"-w", "--write", "-p", "--load", "--system"}
IPVSADM_WRITES = {"-A", "-E", "-D", "-C", "-R", "-S", "-a", "-e", "-d", "--set",
                  "--start-daemon", "--stop-daemon", "--zero", "-Z", "--clear", "--restore",
                  "--save"}


# Programs a catalogue `sh -c` script may not start at all (it runs nft listings only).
_SCRIPT_FORBIDDEN = re.compile(
    r"\b(rm|mv|cp|tee|dd|mount|kill|eval|exec|iptables\S*|ip6tables\S*|ipset|sysctl|"
    r"nsenter|chmod|source)\b|`|\$\(")


def _script_verbs(script: str) -> set[str]:
    """The write verbs of a catalogue `sh -c` script (`nft-tables`): each nft invocation
    must be a listing, nothing is redirected to a file, no other tool is started."""
    verbs: set[str] = set()
    for m in re.finditer(r"(?:^|[;|&{]|\b(?:do|then|else))\s*(nft\b[^;|&]*)", script):
        args = shlex.split(m.group(1))
        verbs |= write_verbs(args)
        if args[1:] and "list" not in args:
            verbs.add(f"<not a listing: {m.group(1)}>")
    if {t.rstrip(";") for t in re.findall(r">\s*(\S+)", script)} - {"/dev/null", "&1", "&2"}:
        verbs.add("<redirects to a file>")
    if _SCRIPT_FORBIDDEN.search(script):
        verbs.add(f"<starts {_SCRIPT_FORBIDDEN.search(script).group(0)}>")  # type: ignore[union-attr]
    return verbs


def write_verbs(argv: Sequence[str]) -> set[str]:
    """The write verbs `argv` would use (empty for a read-only command)."""
    tool, args = os.path.basename(argv[0]), set(argv[1:])
    if tool == "sh" and tuple(argv[1:2]) == ("-c",):
        return _script_verbs(argv[2])
    if tool.startswith(("iptables", "ip6tables")):
        return args & IPTABLES_WRITES | {a for a in args if a.endswith("restore")}
    if tool == "ip":
        return args & IP_WRITES
    if tool == "ipset":
        return args & IPSET_WRITES
    if tool == "nft":
        return args & NFT_WRITES
    if tool == "sysctl":
        return args & SYSCTL_WRITES | {a for a in args if "=" in a}
    if tool in ("ss", "uname"):
        return {a for a in args if a in ("-K", "--kill")}
    if tool == "ipvsadm":  # read-only only when it lists (-L/-l/--list), nothing else
        listing = bool(args & {"-L", "-l", "--list", "-Ln"})
        return set() if listing and not args & IPVSADM_WRITES else (args & IPVSADM_WRITES
                                                                   or {"<not a listing>"})
    return {"<unknown tool>"}


def test_write_verb_detector_catches_write_commands() -> None:
    # The detector itself must be able to fail.
    for argv in (
        ["iptables", "-t", "nat", "-A", "X"],
        ["ip", "route", "add", "x"],
        ["ipset", "add", "s", "1.2.3.4"],
        ["nft", "flush", "ruleset"],
        ["sysctl", "-w", "net.ipv4.ip_forward=1"],
        ["ss", "-K"],
        ["ipvsadm", "-C"],
        ["rm", "-rf", "/"],
        ["sh", "-c", "nft list tables; nft flush ruleset"],
        ["sh", "-c", "nft -j list chains > /etc/x"],
        ["sh", "-c", "nft list chains | while read -r a; do iptables -F; done"],
        ["sh", "-c", "nft list chains; nft -f /tmp/x"],
    ):
        assert write_verbs(argv), argv


def test_catalogue_is_exactly_the_specs_and_read_only() -> None:
    assert set(CATALOGUE) == {s.argv for s in NETNS_SPECS} | {v.argv for v in VERSION_SPECS}
    for argv in CATALOGUE:
        assert not write_verbs(argv), argv


def _script_commands(script: str) -> list[list[str]]:
    """Every `x ARGV ;;` branch and the discovery command, tokenised like sh would."""
    cmds = [
        shlex.split(m.group(1)) for m in re.finditer(r"^\s*\d+\) x (.*) ;;$", script, re.MULTILINE)
    ]
    cmds += [
        shlex.split(m.group(1)) for m in re.finditer(r"-- (.*) </dev/null$", script, re.MULTILINE)
    ]
    return cmds


def test_batch_script_runs_only_catalogue_commands() -> None:
    branches = _script_commands(SCRIPT)
    assert [tuple(b) for b in branches] == list(CATALOGUE)
    # Outside the branches: the fixed framing, which enters a netns (ip netns exec /
    # nsenter), bounds a command (timeout), prints markers, and writes to no file.
    framing = batch._PROLOGUE + batch._EPILOGUE + batch._kinds() + batch._MAIN
    # ... and nothing else: the script is those parts, only unindented
    whole = (
        batch._PROLOGUE
        + "".join(f"  {i}) x {shlex.join(a)} ;;\n" for i, a in enumerate(CATALOGUE))
        + batch._EPILOGUE
        + batch._kinds()
        + batch._MAIN
    )
    assert SCRIPT == "\n".join(line.lstrip(" ") for line in whole.split("\n"))
    for word in ("iptables", "ipset", "nft", "sysctl", "rm", "mount", "kill", "dd", "tee", "eval"):
        assert not re.search(rf"\b{word}\b", framing), word
    # redirections: /dev/null or file-descriptor duplications (the output cap's exit-code
    # channel uses fds 3 and 4), never a file
    assert {t.rstrip(";)") for t in re.findall(r">\s*(\S+)", framing)} <= {
        "/dev/null", "&2", "&1", "&3", "&4", "&-"
    }


def test_discovery_script_runs_only_a_catalogue_command() -> None:
    # the netns-directory walk and the host-/proc fallback run the same one command
    cmds = _script_commands(DISCOVERY_SCRIPT)
    assert len(cmds) == 2
    for cmd in cmds:
        assert tuple(cmd) in CATALOGUE and not write_verbs(cmd)


def test_no_argv_a_remote_transport_sends_contains_a_write_verb() -> None:
    nonce = new_nonce()
    argv = batch_argv(nonce, 30, [(NetnsRef(name="cni-1"), a) for a in CATALOGUE])
    assert argv[:4] == ["sh", "-c", SCRIPT, "sh"]
    # positional arguments: nonce, timeout, then netns tokens and catalogue indices only
    for arg in argv[6:]:
        assert arg == "@cni-1" or arg.isdigit(), arg


@pytest.mark.parametrize("bad", ["a;rm -rf /", "$(reboot)", "../../etc", "UPPER", "x y", "-n", ""])
def test_netns_names_that_are_not_dns1123_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        batch_argv(new_nonce(), 5, [(NetnsRef(name=bad), ("iptables-save",))])


@pytest.mark.parametrize(
    "bad", ["relative/path", "/proc/1/../../etc", "/a b", "/x;reboot", "/$(x)"]
)
def test_netns_paths_with_shell_or_dotdot_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        batch_argv(new_nonce(), 5, [(NetnsRef(path=bad), ("iptables-save",))])
    with pytest.raises(UsageError):
        discovery_argv(new_nonce(), bad)


def test_a_command_outside_the_catalogue_cannot_be_batched() -> None:
    with pytest.raises(UsageError, match="not in the command catalogue"):
        batch_argv(new_nonce(), 5, [(None, ("iptables", "-F"))])
    with pytest.raises(UsageError):
        batch_argv("not-hex", 5, [(None, ("iptables-save",))])


# --------------------------------------------------------------------------- splitting


def _run_script(
    nonce: str, items: list[tuple[str, str, str]], timeout: int = 5
) -> tuple[bytes, bytes]:
    """Run the real SCRIPT with a stand-in catalogue whose commands we control."""
    fake = [("sh", "-c", body) for _, body, _ in items]
    script = batch._build_script(fake)
    res = subprocess.run(  # noqa: PLW1510 - the script's exit code is the last command's
        ["sh", "-c", script, "sh", nonce, str(timeout), "=", *[str(i) for i in range(len(items))]],
        capture_output=True,
    )
    return res.stdout, res.stderr


def test_split_recovers_each_output_byte_for_byte() -> None:
    nonce = new_nonce()
    items = [
        ("no final newline", "printf abc", ""),
        ("empty", "true", ""),
        ("only newlines", "printf '\\n\\n'", ""),
        ("stderr and exit 3", "printf out; printf err >&2; exit 3", ""),
        ("binary and a fake marker", f"printf '\\000\\377{nonce[:31]} E 0 0\\n'", ""),
        ("marker-looking line of another nonce", "printf 'ffff B 1\\nx'", ""),
    ]
    out, err = _run_script(nonce, items)
    pieces = split_batch(out, err, nonce)
    assert pieces[0].stdout == b"abc" and pieces[0].exit_code == 0
    assert pieces[1].stdout == b"" and pieces[1].stderr == b""
    assert pieces[2].stdout == b"\n\n"
    assert (pieces[3].stdout, pieces[3].stderr, pieces[3].exit_code) == (b"out", b"err", 3)
    assert pieces[4].stdout == b"\x00\xff" + nonce[:31].encode() + b" E 0 0\n"
    assert pieces[5].stdout == b"ffff B 1\nx"


def test_a_command_killed_by_the_per_command_timeout_is_marked_timed_out() -> None:
    nonce = new_nonce()
    out, err = _run_script(
        nonce, [("slow", "echo started; sleep 5", ""), ("next", "echo next", "")], timeout=1
    )
    pieces = split_batch(out, err, nonce)
    assert pieces[0].timed_out and pieces[0].stdout == b"started\n"
    assert pieces[1].stdout == b"next\n" and not pieces[1].timed_out


def test_a_batch_cut_short_keeps_finished_commands_and_the_partial_one() -> None:
    nonce = new_nonce()
    out = (f"{nonce} B 0\nfull\n\n{nonce} E 0 0 1 1 5000001\n{nonce} B 1\npart").encode()
    pieces = split_batch(out, b"", nonce)
    assert pieces[0].stdout == b"full\n" and pieces[0].exit_code == 0 and pieces[0].duration_ms == 5
    assert pieces[1].stdout == b"part" and pieces[1].exit_code is None
    assert 2 not in pieces


# --------------------------------------------------------------------------- transport


class FakeInner:
    """Records what a BatchingTransport sends; answers like a node would."""

    name = "fake"

    def __init__(self, has_sh: bool = True, cut_after: int | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.timeouts: list[float] = []
        self.has_sh = has_sh
        self.cut_after = cut_after

    def run(self, argv: Sequence[str], *, netns: NetnsRef | None, timeout: float) -> ExecResult:
        self.calls.append(tuple(argv))
        self.timeouts.append(timeout)
        if argv[0] == "sh":
            if not self.has_sh:
                return ExecResult(None, b"", b"sh: not found", 1, not_found=True)
            nonce, indices = argv[4], [a for a in argv[6:] if a.isdigit()]
            out = b""
            for n, i in enumerate(indices):
                out += f"{nonce} B {i}\n{CATALOGUE[int(i)][0]}-output".encode()
                if self.cut_after is not None and n == self.cut_after:
                    return ExecResult(None, out, b"", 10, timed_out=True)
                out += f"\n{nonce} E {i} 0 1 \n".encode()
            return ExecResult(0, out, b"", 10)
        return ExecResult(0, f"{argv[0]}-single".encode(), b"", 1)

    def close(self) -> None:
        pass


def test_one_round_trip_answers_every_command_of_a_target() -> None:
    inner = FakeInner()
    t = BatchingTransport(inner)
    ns = NetnsRef(name="cni-1")
    results = {spec.argv: t.run(spec.argv, netns=ns, timeout=5) for spec in NETNS_SPECS}
    assert len(inner.calls) == 1 and t.round_trips == 1
    for argv, res in results.items():
        assert res.stdout == f"{argv[0]}-output".encode() and res.exit_code == 0


def test_without_sh_the_target_falls_back_to_one_exec_per_command() -> None:
    inner = FakeInner(has_sh=False)
    t = BatchingTransport(inner)
    out = [t.run(spec.argv, netns=None, timeout=5) for spec in NETNS_SPECS[:3]]
    assert [r.stdout for r in out] == [f"{s.argv[0]}-single".encode() for s in NETNS_SPECS[:3]]
    assert inner.calls[0][0] == "sh" and all(c[0] != "sh" for c in inner.calls[1:])
    t.run(NETNS_SPECS[0].argv, netns=NetnsRef(name="other"), timeout=5)
    assert sum(1 for c in inner.calls if c[0] == "sh") == 1  # never retried on that target


def test_a_batch_cut_by_the_deadline_is_never_retried_one_command_at_a_time() -> None:
    inner = FakeInner(cut_after=1)
    t = BatchingTransport(inner, target_timeout=7)
    first, second, third = (t.run(s.argv, netns=None, timeout=5) for s in NETNS_SPECS[:3])
    assert first.exit_code == 0
    assert second.timed_out and second.stdout == f"{NETNS_SPECS[1].argv[0]}-output".encode()
    # Not reached before the deadline: timed out too, and nothing more was sent.
    assert third.timed_out and third.stdout == b""
    assert len(inner.calls) == 1 and inner.timeouts == [7]


def test_the_batch_gives_each_command_its_own_timeout_as_the_manifest_says() -> None:
    inner = FakeInner()
    t = BatchingTransport(inner, command_timeout=30, target_timeout=400)
    t.run(NETNS_SPECS[0].argv, netns=None, timeout=30)
    sent = inner.calls[0]
    assert batch.is_allowed(sent)
    nft = batch.INDEX[next(s.argv for s in NETNS_SPECS if s.id == "nft-tables")]
    # the token before nft's index raises its timeout to 4 x 30 s; the next one restores it
    i = sent.index(str(nft))
    assert sent[5] == "30" and sent[i - 1] == "t120" and sent[i + 1] == "t30"


@pytest.mark.skipif(not os.path.exists("/usr/bin/timeout"), reason="coreutils timeout")
def test_the_per_command_timeout_token_changes_the_limit_inside_the_script() -> None:
    nonce = new_nonce()
    script = batch._PROLOGUE + "    0) x sleep 3 ;;\n" + batch._EPILOGUE + batch._MAIN
    res = subprocess.run(
        ["sh", "-c", script, "sh", nonce, "1", "=", "0", "t5", "0"], capture_output=True
    )
    pieces = split_batch(res.stdout, res.stderr, nonce)
    # `_pieces` keys by index: the second run (t5) overwrote the first (t1, killed)
    assert pieces[0].exit_code == 0 and not pieces[0].timed_out
    res = subprocess.run(["sh", "-c", script, "sh", nonce, "1", "=", "0"], capture_output=True)
    assert split_batch(res.stdout, res.stderr, nonce)[0].timed_out


@pytest.mark.kernel
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates a network namespace")
def test_batched_outputs_equal_single_runs_in_a_real_netns() -> None:
    from ambientctl.collectors.local import LocalTransport

    name = f"amb-batch-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(
            ["ip", "netns", "exec", name, "iptables", "-t", "nat", "-N", "ISTIO_OUTPUT"], check=True
        )
        subprocess.run(["ip", "-n", name, "addr", "add", "10.244.1.7/24", "dev", "lo"], check=True)
        local = LocalTransport()
        batched = BatchingTransport(LocalTransport())
        ns = NetnsRef(name=name)
        for spec in NETNS_SPECS:
            if spec.id == "iptables-save":
                continue  # its header carries the time of day
            one = local.run(spec.argv, netns=ns, timeout=10)
            many = batched.run(spec.argv, netns=ns, timeout=10)
            if one.not_found:  # a binary this machine lacks (ipvsadm): missing both ways
                assert many.not_found, spec.id
                continue
            assert (many.stdout, many.exit_code) == (one.stdout, one.exit_code), spec.id
        assert batched.round_trips == 1
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_live_collection_modules_import_no_sdk_until_used() -> None:
    # perf-reliability P9: offline commands must not pay ~240 ms of SDK imports.
    code = (
        "import sys\n"
        "import ambientctl.cli.source, ambientctl.collectors.live, ambientctl.collectors.docker\n"
        "import ambientctl.collectors.kube, ambientctl.collectors.ssh, ambientctl.collectors.discovery\n"
        "print(sorted(m for m in ('docker', 'kubernetes', 'paramiko', 'websocket', 'websockets')"
        " if m in sys.modules))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert res.stdout.strip() == "[]"


def test_the_allowlist_passes_only_catalogue_and_the_two_fixed_scripts() -> None:
    from ambientctl.collectors.batch import AllowlistTransport, is_allowed
    from ambientctl.errors import TransportError

    nonce = new_nonce()
    good = [
        *CATALOGUE,
        batch_argv(nonce, 30, [(NetnsRef(name="cni-1"), a) for a in CATALOGUE]),
        batch_argv(nonce, 30, [(NetnsRef(path="/host/var/run/netns/cni-2"), CATALOGUE[0])]),
        discovery_argv(nonce, "/var/run/netns"),
        discovery_argv(nonce, "/host/var/run/netns", "/host/proc"),
    ]
    bad = [
        ("iptables", "-t", "nat", "-F"),
        ("iptables-save", "-c"),  # not the catalogue argv exactly
        ("sh", "-c", "iptables -F", "sh", nonce, "30"),
        ("sh", "-c", SCRIPT, "sh", nonce, "30", "@x;reboot"),
        ("sh", "-c", SCRIPT, "sh", nonce, "30", "%/var/run/../../etc"),
        ("sh", "-c", SCRIPT, "sh", nonce, "30", "999"),
        ("sh", "-c", SCRIPT, "sh", "not-a-nonce", "30", "0"),
        ("sh", "-c", DISCOVERY_SCRIPT, "sh", nonce, "/var/run/netns; reboot"),
        ("sh", "-c", DISCOVERY_SCRIPT, "sh", nonce, "/var/run/netns", "/host/proc/../etc"),
        ("sh", "-c", DISCOVERY_SCRIPT, "sh", nonce, "/a", "/b", "/c"),
    ]
    assert all(is_allowed(a) for a in good)
    assert not any(is_allowed(a) for a in bad)
    inner = FakeInner()
    t = AllowlistTransport(inner)
    for argv in bad:
        with pytest.raises(TransportError, match="outside the read-only catalogue"):
            t.run(argv, netns=None, timeout=5)
    with pytest.raises(UsageError):
        t.run(CATALOGUE[0], netns=NetnsRef(name="x;reboot"), timeout=5)
    assert inner.calls == []
    assert t.run(CATALOGUE[0], netns=None, timeout=5).exit_code == 0


class _LimitedNode:
    """A node behind a front that refuses a request past `limit` bytes of `command=`
    parameters (as an 8 KiB nginx answers 414), answering what fits like the node's `sh`
    (`tests/peers/sim_cluster.SimNode`); each exec takes `delay` seconds."""

    name = "kube"

    def __init__(self, pods: int, limit: int, delay: float = 0.0) -> None:
        from tests.peers.sim_cluster import SimNode, netns_name

        self.names = [netns_name(0, p) for p in range(pods)]
        self.node = SimNode(0, [(n, "10.0.0.1") for n in self.names], b"host\n", b"pod\n")
        self.limit, self.delay = limit, delay
        self.sent: list[int] = []  # netns per exec that reached the node
        self.refused = 0

    def argv_budget(self) -> int:
        return self.limit

    @staticmethod
    def argv_cost(args: Sequence[str]) -> int:
        from ambientctl.collectors.kube import KubeExecTransport

        return KubeExecTransport.argv_cost(args)

    def run(self, argv: Sequence[str], *, netns: NetnsRef | None, timeout: float) -> ExecResult:
        from ambientctl.errors import RequestTooLong

        if self.argv_cost(argv) > self.limit:
            self.refused += 1
            raise RequestTooLong("kube exec: HTTP 414 (Handshake status 414)")
        import time

        time.sleep(self.delay)
        self.sent.append(sum(1 for a in argv[6:] if a[:1] in "@%="))
        out, err, rc = self.node(list(argv))
        return ExecResult(rc, out, err, 1)

    def close(self) -> None:
        pass


def _room_for(pods: int) -> int:
    """A limit that holds the batch script and about `pods` pods' tokens."""
    from ambientctl.collectors.kube import KubeExecTransport

    head = batch.node_batch_argv("0" * 32, 5, [])
    return KubeExecTransport.argv_cost(head) + pods * 75


def _expect_pods(inner: _LimitedNode, **kw: float) -> tuple[BatchingTransport, list]:
    from ambientctl.collectors.live import RoutedNetns

    t = BatchingTransport(inner, **kw)
    refs = [RoutedNetns(name=n, kind="pod") for n in inner.names]
    t.expect(refs)
    return t, refs


def test_a_node_batch_refused_as_too_long_is_sent_again_in_groups_that_fit() -> None:
    inner = _LimitedNode(pods=60, limit=_room_for(15))
    t, refs = _expect_pods(inner)
    first = t.run(("iptables-save",), netns=refs[0], timeout=5)
    assert first.stdout == b"pod\n"
    assert inner.refused == 1 and len(inner.sent) >= 2 and sum(inner.sent) == 60
    for ref in refs[1:]:  # every netns answered from its group, no exec of its own
        assert t.run(("iptables-save",), netns=ref, timeout=5).stdout == b"pod\n"
    assert t.round_trips == len(inner.sent) + 1
    # the next node batch of this transport goes straight to groups: no second 414
    more = [dataclasses.replace(r, name=r.name + "b") for r in refs[:30]]
    t.expect(more)
    t.run(("iptables-save",), netns=more[0], timeout=5)
    assert inner.refused == 1


def test_groups_the_deadline_leaves_no_time_for_time_out_unsent() -> None:
    inner = _LimitedNode(pods=60, limit=_room_for(15), delay=0.4)
    t, refs = _expect_pods(inner, target_timeout=0.3)
    t.run(("iptables-save",), netns=refs[0], timeout=5)
    assert len(inner.sent) == 1  # the first group ran into the deadline; no other was sent
    last = t.run(("iptables-save",), netns=refs[-1], timeout=5)
    assert last.timed_out and last.stdout == b""
    assert len(inner.sent) == 1


def test_a_batch_no_cut_can_fit_keeps_its_error() -> None:
    from ambientctl.errors import RequestTooLong

    inner = _LimitedNode(pods=3, limit=100)  # not even the script fits
    t, refs = _expect_pods(inner)
    with pytest.raises(RequestTooLong):
        t.run(("iptables-save",), netns=refs[0], timeout=5)
