"""The kernel's own rule trace in a lab's namespaces: which rules it evaluated, in its order.

nftables can trace a packet through every base chain it enters (nft(8) "meta nftrace"):
a rule `meta nftrace set 1` marks the skb, and from then on every nf_tables chain it
runs - native nft tables and iptables-nft's tables alike, both are nf_tables chains -
reports each rule that matched (with its verdict) and each policy that applied, over
netlink to `nft monitor trace`, which runs per netns (the netlink socket lives in the
namespace of the process: `ip netns exec NAME nft -a monitor trace`; `-a` names the rule
by its handle).

`KernelTrace` adds, in each namespace of a lab, one table `inet ambientlab_trace` with a
prerouting and an output chain at priority -350 - before raw (-300) and conntrack
(-200), so every chain the packet meets afterwards is traced - starts one monitor per
namespace, and parses what they print. The skb's trace flag is cleared when a packet
crosses into another netns (`skb_scrub_packet`), which is why every namespace gets its
own marking chains. Add it AFTER collecting a bundle: its table is not part of the lab.

What the kernel prints (nft 1.0.6, kernel 6.x), one line per event::

    trace id 45e941c6 ip nat OUTPUT packet: oif "lo" ip saddr ... tcp flags == syn ...
    trace id 45e941c6 ip nat OUTPUT rule meta l4proto tcp ... jump X # handle 4 (verdict jump X)
    trace id 45e941c6 ip mangle OUTPUT policy accept meta mark 0x00000005

A rule that does not match is not reported; nor is the implicit return at the end of a
user chain. A `packet:` line opens each base chain the packet enters.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ambientlab.inpod_emulate import connect_in
from ambientlab.netns import LabError

TABLE = "ambientlab_trace"
_RULESET = f"""table inet {TABLE} {{
    chain pre {{
        type filter hook prerouting priority -350; policy accept;
        meta nftrace set 1
    }}
    chain out {{
        type filter hook output priority -350; policy accept;
        meta nftrace set 1
    }}
}}
"""
READY_PORT = 9  # discard: the datagram that proves a monitor is listening

_LINE = re.compile(
    r"^trace id (?P<id>[0-9a-f]+) (?P<family>\S+) (?P<table>\S+) (?P<chain>\S+) "
    r"(?P<kind>packet|rule|policy|verdict|unknown)\b:?\s?(?P<rest>.*)$"
)
_HANDLE = re.compile(r"# handle (\d+)")
_VERDICT = re.compile(r"\(verdict ([^)]*)\)\s*$")
_FLAGS = re.compile(r"tcp flags == (\S+)")
_TTL = re.compile(r"\bip ttl (\d+)")
_PORTS = re.compile(r"tcp sport (\d+) tcp dport (\d+)")
_ADDRS = re.compile(r"ip6? saddr (\S+) ip6? daddr (\S+)")


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One line of `nft -a monitor trace` in one namespace (`netns` is the logical id)."""

    netns: str
    trace_id: str
    family: str
    table: str
    chain: str
    kind: str  # packet | rule | policy | verdict
    handle: int | None  # rule handle (kind "rule")
    verdict: str | None  # "continue", "accept", "drop", "jump X", "goto X", "return"
    text: str  # the rest of the line: the packet's headers, or the rule


def parse_trace(netns: str, text: str) -> list[TraceEvent]:
    """The events of one monitor's output (lines that are not trace events are ignored)."""
    out: list[TraceEvent] = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        rest = m.group("rest")
        kind = m.group("kind")
        handle = verdict = None
        if kind == "rule":
            h = _HANDLE.search(rest)
            handle = int(h.group(1)) if h else None
            v = _VERDICT.search(rest)
            verdict = v.group(1) if v else None
        elif kind == "policy":
            verdict = rest.split()[0] if rest else None
        elif kind == "verdict":
            verdict = rest.strip() or None
        out.append(TraceEvent(netns, m.group("id"), m.group("family"), m.group("table"),
                              m.group("chain"), kind, handle, verdict, rest))
    return out


def events_before(netns: str, text: str, needle: str) -> list[TraceEvent]:
    """The events of a monitor's output up to the first trace line that contains `needle`
    (the flush datagram): a monitor prints in the kernel's order, so what follows it was
    sent after the flush."""
    cut = text.find(needle)
    if cut >= 0:
        text = text[:text.rfind("\n", 0, cut) + 1]
    return parse_trace(netns, text)


def tcp_of(event: TraceEvent) -> tuple[str, str, int, str, int] | None:
    """(flags, saddr, sport, daddr, dport) of a `packet:` event's TCP segment as this base
    chain saw it (NAT changes it between chains), None for other packets."""
    f, p, a = _FLAGS.search(event.text), _PORTS.search(event.text), _ADDRS.search(event.text)
    if not f or not p or not a:
        return None
    return f.group(1), a.group(1), int(p.group(1)), a.group(2), int(p.group(2))


# (namespace logical id, hook, family, table, chain, position or None for a policy, verdict)
StepKey = tuple[str, str, str, str, str, int | None, str]


def kernel_steps(events: dict[str, list[TraceEvent]], answer: bool,
                  positions: dict[str, dict[tuple[str, str, int], tuple[str, int]]],
                  hooks: dict[str, dict[tuple[str, str, str], str]]) -> dict[str, list[StepKey]]:
    """Per namespace, the steps of the replayed connection's SYN (or of its answer).

    One leg is replayed per window, so its SYN is the SYN of the window (a dropped SYN is
    not retransmitted: the probe gives up after 0.5 s, before the kernel's first 1 s RTO).
    Its answer is a SYN-ACK or RST addressed to a source the SYN had in some namespace
    (before or after a SNAT: the next namespace prints the SNATed one); a late SYN-ACK
    retransmitted for an earlier leg goes to another (ephemeral) port.

    A server retransmits an unanswered SYN-ACK after 1 s; on a loaded machine that can
    still fall in the window, and the simulator walks one packet. A traversal (from the
    trace table's own base chain, where `meta nftrace set 1` starts it, to the next one)
    that repeats an earlier one in the same namespace - same segment, same TTL, same
    rules - is that retransmission and is counted once. A routing loop is not hidden:
    its TTL drops on every pass.
    """
    out: dict[str, list[StepKey]] = {}
    # The SYN's tuples in every namespace: a SNAT in one namespace's nat POSTROUTING is
    # never printed there (no base chain follows it), the next namespace sees it.
    syn_tuples = {tcp[1:] for evs in events.values() for e in evs
                  if e.kind == "packet" and (tcp := tcp_of(e)) is not None and tcp[0] == "syn"}
    clients = {(t[0], t[1]) for t in syn_tuples}
    for ns, evs in events.items():

        def wanted(tcp: tuple[str, str, int, str, int] | None) -> bool:
            if tcp is None:
                return False
            if not answer:
                return tcp[0] == "syn"
            flags, _sa, _sp, da, dp = tcp
            return flags in ("0x12", "0x14", "rst") and (da, dp) in clients

        selected: dict[str, bool] = {}
        hook_of: dict[str, str] = {}
        # Traversals in the order they started: (segment and TTL as the trace table saw
        # them, the steps); a trace id names the traversal it is in now.
        passes: list[tuple[tuple[object, ...], list[StepKey]]] = []
        current: dict[str, int] = {}
        for e in evs:
            if e.kind == "packet":
                tcp = tcp_of(e)
                selected[e.trace_id] = wanted(tcp)
                base = hooks[ns].get((e.family, e.table, e.chain))
                if base is not None:
                    hook_of[e.trace_id] = base
                if e.table == TABLE or e.trace_id not in current:
                    current[e.trace_id] = len(passes)
                    ttl = _TTL.search(e.text)
                    passes.append(((tcp, ttl.group(1) if ttl else None), []))
                continue
            if e.table == TABLE or not selected.get(e.trace_id) or e.trace_id not in current:
                continue
            hook = hook_of.get(e.trace_id, "?")
            steps = passes[current[e.trace_id]][1]
            if e.kind == "rule":
                assert e.handle is not None, e
                chain, pos = positions[ns][(e.family, e.table, e.handle)]
                assert chain == e.chain, e
                verdict = (e.verdict or "?").split()[0]
                steps.append((ns, hook, e.family, e.table, e.chain, pos, verdict))
            elif e.kind == "policy":
                steps.append((ns, hook, e.family, e.table, e.chain, None, e.verdict or "?"))
        seen: set[tuple[object, ...]] = set()
        kept: list[StepKey] = []
        for head, steps in passes:
            key = (head, tuple(steps))
            if steps and key not in seen:
                seen.add(key)
                kept.extend(steps)
        if kept:
            out[ns] = kept
    return out


def _ns_exec(name: str, *argv: str, stdin: str | None = None) -> str:
    res = subprocess.run(["ip", "netns", "exec", name, *argv], input=stdin, capture_output=True,
                         text=True, timeout=30, check=False)
    if res.returncode != 0:
        raise LabError(f"{' '.join(argv)} in netns {name} failed: {res.stderr.strip()}")
    return res.stdout


def _send_ready(netns: str, token: int) -> None:
    """One UDP datagram to 127.0.0.1:9 from inside `netns`, source port `token`."""

    def send(dst: str, port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", token))
            s.sendto(b"ready", (dst, port))

    connect_in(netns, "127.0.0.1", READY_PORT, _fn=send)


class KernelTrace:
    """Kernel rule traces of a set of namespaces (logical id -> `ip netns` name).

    Use as a context manager; between `mark()` and `events_since()` replay one thing; the
    events of that window are returned per namespace, in the order each kernel printed them.
    On exit the monitors are stopped and the trace table removed (the lab stays as it was).
    """

    def __init__(self, netns: Mapping[str, str], workdir: str | os.PathLike[str]) -> None:
        self.netns = dict(netns)
        self.workdir = Path(workdir)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._files: dict[str, Path] = {}
        self._installed: list[str] = []
        self._token = 50_000  # source port of the last ready/flush datagram
        self._ruleset_docs: dict[str, dict[str, object]] | None = None

    def __enter__(self) -> KernelTrace:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Install the marking chains and start one monitor per namespace; wait until all
        of them report (a datagram sent in each namespace shows up in its monitor)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for logical, name in self.netns.items():
            _ns_exec(name, "nft", "-f", "-", stdin=_RULESET)
            self._installed.append(name)
            path = self.workdir / f"trace-{name}.txt"
            self._files[logical] = path
            with open(path, "wb") as out:
                self._procs[logical] = subprocess.Popen(
                    ["ip", "netns", "exec", name, "stdbuf", "-oL", "nft", "-a", "monitor",
                     "trace"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        pending = dict(self.netns)
        deadline = time.monotonic() + 20
        while pending:
            if time.monotonic() > deadline:
                raise LabError(f"nft monitor trace never reported in {sorted(pending)}")
            self._token += 1
            token = self._token
            for name in list(pending.values()):
                _send_ready(name, token)
            time.sleep(0.05)
            for logical in list(pending):
                if f"udp sport {token} udp dport {READY_PORT}" in self._read(logical, 0):
                    del pending[logical]

    def stop(self) -> None:
        """Stop the monitors this object started and remove its tables (idempotent)."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
        for name in self._installed:
            subprocess.run(["ip", "netns", "exec", name, "nft", "delete", "table", "inet", TABLE],
                           capture_output=True, timeout=30, check=False)
        self._installed.clear()

    def _read(self, logical: str, offset: int) -> str:
        with open(self._files[logical], "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def mark(self) -> dict[str, int]:
        """Where each monitor's output stands now."""
        return {logical: self._files[logical].stat().st_size for logical in self.netns}

    def events_since(self, marks: Mapping[str, int], timeout: float = 10.0
                     ) -> dict[str, list[TraceEvent]]:
        """Every event printed since `marks`, up to a flush datagram sent now.

        Each namespace's monitor prints its trace events in the order the kernel evaluated
        the packets (one netlink multicast socket per namespace), so once a datagram sent
        after the replay shows up in every monitor, everything the replay caused there has
        been printed: no fixed quiet period to wait for (it cost 0.15 s a leg). What a
        monitor printed after the flush datagram is left out: it came later than the
        replay (a SYN-ACK retransmitted 1 s after the replay gave up, on a loaded machine).
        """
        needle = self._flush(timeout)
        return {logical: events_before(logical, self._read(logical, marks[logical]), needle)
                for logical in self.netns}

    def _flush(self, timeout: float) -> str:
        """Send the flush datagram in every namespace and wait for every monitor to print it;
        returns the text that names it in a trace line."""
        self._token = 50_000 + (self._token - 50_000 + 1) % 10_000
        token = self._token
        for name in self.netns.values():
            _send_ready(name, token)
        needle = f"udp sport {token} udp dport {READY_PORT} "
        pending = set(self.netns)
        deadline = time.monotonic() + timeout
        while pending:
            for logical in list(pending):
                # The flush lines are at the end: read only the tail of each file.
                size = self._files[logical].stat().st_size
                if needle in self._read(logical, max(0, size - 65536)):
                    pending.discard(logical)
            if not pending:
                return needle
            if time.monotonic() > deadline:
                raise LabError(f"nft monitor trace did not print the flush datagram in "
                               f"{sorted(pending)}")
            time.sleep(0.005)

    def _rulesets(self) -> dict[str, dict[str, object]]:
        """`nft -j list ruleset` of every namespace, read once (positions and hooks)."""
        if self._ruleset_docs is None:
            self._ruleset_docs = {
                logical: json.loads(_ns_exec(name, "nft", "-j", "list", "ruleset"))
                for logical, name in self.netns.items()}
        return self._ruleset_docs

    def rule_positions(self) -> dict[str, dict[tuple[str, str, int], tuple[str, int]]]:
        """Per namespace: (family, table, rule handle) -> (chain, 1-based position), from
        the live `nft -j list ruleset` (the handles the monitor prints)."""
        from ambientctl.analyzers.parse.nft_hooks import rule_positions

        return {logical: rule_positions(json.dumps(doc))
                for logical, doc in self._rulesets().items()}

    def base_hooks(self) -> dict[str, dict[tuple[str, str, str], str]]:
        """Per namespace: (family, table, chain) -> hook of every base chain."""
        out: dict[str, dict[tuple[str, str, str], str]] = {}
        for logical, doc in self._rulesets().items():
            hooks: dict[tuple[str, str, str], str] = {}
            for item in doc.get("nftables", []):  # type: ignore[attr-defined]
                c = item.get("chain")
                if isinstance(c, dict) and c.get("hook"):
                    hooks[(c["family"], c["table"], c["name"])] = c["hook"]
            out[logical] = hooks
        return out
