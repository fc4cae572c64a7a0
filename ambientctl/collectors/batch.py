"""One round trip per target: run a target's catalogue commands in one remote exec.

A remote exec costs far more than the command it runs (docker exec ~0.3 s, an API-server
exec a WebSocket handshake, an ssh session a fork of the login shell: perf-reliability.md
§2.1), and a node has ~15 commands per network namespace. So the remote transports send
ONE exec per target:

    sh -c SCRIPT sh NONCE TIMEOUT TOKEN...

`SCRIPT` is a constant built once, at import, from the fixed catalogue
(`specs.NETNS_SPECS` + `specs.VERSION_SPECS`): each catalogue argv is a `case` branch
selected by its index. Nothing from the cluster is ever interpolated into it; cluster-
derived values travel only as positional arguments, and only these shapes are accepted
(checked here, again, before anything is sent):

    NONCE    32 hex digits (framing marker, random per call)
    TIMEOUT  an integer number of seconds (per command, via coreutils `timeout` if present)
    tSECS    from here on, the per-command timeout is SECS (integer): `nft` gets its
             spec's `timeout_factor`, exactly what the runner and the manifest say
    cBYTES   each command's stdout passes through `head -c BYTES` on the node (the
             output cap + 1: a longer piece is known to be cut; the command itself gets
             SIGPIPE and stops). The exit code still travels, through fd 4 of a
             command substitution. Without `head` on the node, no cap there: the
             transport's own stream cap still bounds memory.
    =        run the following commands in the target's own network namespace
    @NAME    ... inside the named netns NAME (`ip netns exec NAME`), NAME DNS-1123
    %PATH    ... inside the netns file PATH (`nsenter --net=PATH --`), an absolute path
    N        run catalogue command number N

Framing: before and after each command the script prints a marker line with the nonce on
BOTH stdout and stderr, so each stream can be split on its own (the transports keep the
two streams apart, but not their relative order). The end marker carries the exit code,
whether `timeout` wrapped the command, and start/end times (`date +%s%N`, when the node's
`date` supports it). The marker's leading newline is the script's, so a command's output
is recovered byte for byte, with or without a final newline. Commands run strictly one
after the other: iptables-save and friends never overlap inside one netns.

Netns segments: each netns token starts a segment: `NONCE S TOKEN net:[INODE]` on stdout
(the inode read INSIDE that netns, by the same way the commands enter it) and
`NONCE S TOKEN` on stderr. So one exec can cover a node's own netns and every pod netns
on it (`BatchingTransport.expect`), and `split_segments` hands each its pieces.

Netns identity: before the first command the script prints `NONCE I net:[INODE]`
(`readlink /proc/self/ns/net` of the batch shell, i.e. the netns its commands run in);
`BatchingTransport.netns_inode` hands it to the manifest (`targets[].netns_inode`).

`BatchingTransport` wraps a remote transport without changing what the runner sees: the
first `run()` for a netns executes the whole batch and caches each command's result; the
following calls are answered from that cache. If the target has no `sh` (distroless
ztunnel), or the batch's output cannot be split, it falls back to one exec per command.
The whole batch gets the target's deadline (`target_timeout`), no more; a batch that ran
into it is NOT retried one command at a time (a hung node would cost the deadline once
per command): the commands it never reached are answered "timed out" from the cache.
"""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
import shlex
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ambientctl.bundle.layout import valid_name
from ambientctl.collectors.exec_outcome import Deadline, missing_binary
from ambientctl.collectors.specs import NETNS_SPECS, VERSION_SPECS, ZTUNNEL_SPECS, specs_for
from ambientctl.collectors.transport import NetnsRef, Transport
from ambientctl.errors import RequestTooLong, TransportError, UsageError
from ambientctl.raw import ExecResult

# Every argv the batch can run, in a fixed order: the index is the script's `case` label.
CATALOGUE: tuple[tuple[str, ...], ...] = tuple(
    dict.fromkeys([s.argv for s in NETNS_SPECS] + [v.argv for v in VERSION_SPECS])
)
INDEX: dict[tuple[str, ...], int] = {argv: i for i, argv in enumerate(CATALOGUE)}
# The ztunnel admin reads: allowed one by one, never batched (one per node, and the
# target is the ztunnel pod's netns, whose own dump the batch already covered).
ADMIN: frozenset[tuple[str, ...]] = frozenset(s.argv for s in ZTUNNEL_SPECS)
# Per-command timeout multipliers (specs.CommandSpec.timeout_factor), by argv.
FACTOR: dict[tuple[str, ...], float] = {s.argv: s.timeout_factor for s in NETNS_SPECS}

_PROLOGUE = r"""n=$1 t=$2
shift 2
LC_ALL=C
export LC_ALL
to=0
if command -v timeout >/dev/null 2>&1; then to=1; fi
hd=0
if command -v head >/dev/null 2>&1; then hd=1; fi
m=self w= c=
i=$(readlink /proc/self/ns/net 2>/dev/null)
printf '%s I %s\n' "$n" "$i"
x() {
  case $m in
  name) set -- ip netns exec "$w" "$@" ;;
  path) set -- nsenter "--net=$w" -- "$@" ;;
  esac
  if [ "$to" = 1 ]; then set -- timeout -k 2 "$t" "$@"; fi
  if [ -n "$c" ] && [ "$hd" = 1 ]; then
    { r=$( { { "$@" </dev/null 4>&-; echo $? >&4; } | head -c "$c" >&3; } 4>&1 ); } 3>&1
    return "${r:-1}"
  fi
  "$@" </dev/null
}
y() {
  case $m in
  name) ip netns exec "$w" readlink /proc/self/ns/net ;;
  path) nsenter "--net=$w" -- readlink /proc/self/ns/net ;;
  *) readlink /proc/self/ns/net ;;
  esac
}
z() {
  k=$(y </dev/null 2>/dev/null)
  printf '%s S %s %s\n' "$n" "$1" "$k"
  printf '%s S %s\n' "$n" "$1" >&2
}
o() {
  a=$1
  printf '%s B %s\n' "$n" "$a"
  printf '%s B %s\n' "$n" "$a" >&2
  s=$(date +%s%N 2>/dev/null)
  case $a in
"""
_EPILOGUE = r"""  *) false ;;
  esac
  r=$?
  e=$(date +%s%N 2>/dev/null)
  printf '\n%s E %s %s %s %s %s\n' "$n" "$a" "$r" "$to" "$s" "$e"
  printf '\n%s E %s\n' "$n" "$a" >&2
}
"""
# The loop over the positional tokens; `k*` tokens run a whole kind's list (`_kinds`).
_MAIN = r"""for a in "$@"; do
  case $a in
  @*) m=name w=${a#@}; z "$a" ;;
  %*) m=path w=${a#%}; z "$a" ;;
  =) m=self w=; z "$a" ;;
  t*) t=${a#t} ;;
  c*) c=${a#c} ;;
  k*) K "$a" ;;
  *) o "$a" ;;
  esac
done
"""
# Kind tokens: what `batch_for` runs on a node's own netns (`kn`) and on a pod's (`kp`),
# each command with its spec's timeout factor (integers: the shell's arithmetic). One
# token per netns instead of ~20 keeps a node-wide batch's argv short: the API server
# carries it in the exec URL, which proxies cap at a few KiB.
KIND_TOKENS: dict[str, str] = {"node": "kn", "pod": "kp"}

def _kinds() -> str:
    """The `K` function: each kind token's command list (see KIND_TOKENS)."""
    lines = ["K() {", "  b=$t", "  case $1 in"]
    for kind, token in KIND_TOKENS.items():
        steps = []
        for argv in batch_for(kind):
            factor = FACTOR.get(argv, 1.0)
            if factor != int(factor):
                raise AssertionError(f"timeout factor of {argv} must be an integer")
            index = INDEX[argv]
            steps.append(f"t=$((b*{int(factor)})); o {index}; t=$b" if factor != 1 else f"o {index}")
        lines.append(f"  {token}) {'; '.join(steps)} ;;")
    lines += ["  esac", "  t=$b", "}", ""]
    return "\n".join(lines)


def _build_script(catalogue: Sequence[tuple[str, ...]]) -> str:
    branches = "".join(f"  {i}) x {shlex.join(argv)} ;;\n" for i, argv in enumerate(catalogue))
    text = _PROLOGUE + branches + _EPILOGUE + _kinds() + _MAIN
    # Without its indentation (no line of it continues a quoted string or a here-document):
    # the script travels in the Kubernetes exec URL, a space as `%20` (an 8 KiB proxy
    # leaves room for a dozen more pods' tokens per exec without those ~440 bytes).
    return "\n".join(line.lstrip(" ") for line in text.split("\n"))



# Discovery: which network namespaces a node has and the addresses inside each, to map
# netns -> pod by pod IP. Same rules: constant text, validated path arguments only.
#
# `sh -c DISCOVERY_SCRIPT sh NONCE DIR [PROC]`: every netns file in DIR (the node's
# /var/run/netns). When DIR does not exist and PROC is given (an istio-cni agent without
# the host's /var/run/netns mount sees the host's /proc there), the script prints
# `NONCE P PROC` and walks PROC/PID/ns/net instead: one PID per distinct netns, told apart
# by the inode `stat -L` reports (the nsfs inode: namespaces(7) "/proc/[pid]/ns/"), the
# node's own netns (PROC/1/ns/net, PID 1 = the host's init) left out; entries are named by
# PID. Without `stat` no netns can be told apart, and none is listed rather than guessed.
DISCOVERY_ARGV: tuple[str, ...] = ("ip", "-j", "-d", "addr")  # a catalogue command
DISCOVERY_SCRIPT: str = (
    r"""n=$1 d=$2 p=$3
LC_ALL=C
export LC_ALL
if [ -d "$d" ] || [ -z "$p" ]; then
  for f in "$d"/*; do
    [ -e "$f" ] || continue
    printf '%s N %s\n' "$n" "${f##*/}"
    nsenter "--net=$f" -- """
    + shlex.join(DISCOVERY_ARGV)
    + r""" </dev/null
    printf '\n%s E %s\n' "$n" "$?"
  done
  exit 0
fi
printf '%s P %s\n' "$n" "$p"
s=" $(stat -L -c %i "$p/1/ns/net" 2>/dev/null) "
for f in "$p"/[0-9]*/ns/net; do
  i=$(stat -L -c %i "$f" 2>/dev/null) || continue
  [ -n "$i" ] || continue
  case $s in *" $i "*) continue ;; esac
  s="$s$i "
  q=${f#"$p"/}
  printf '%s N %s\n' "$n" "${q%%/*}"
  nsenter "--net=$f" -- """
    + shlex.join(DISCOVERY_ARGV)
    + r""" </dev/null
  printf '\n%s E %s\n' "$n" "$?"
done
"""
)

_NONCE = re.compile(r"^[0-9a-f]{32}$")
_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")


def netns_token(netns: NetnsRef | None) -> str:
    """The positional-argument token that selects `netns` (validated, never quoted in)."""
    if netns is None or (netns.name is None and netns.path is None and netns.pid is None):
        return "="
    if netns.name is not None:
        if not valid_name(netns.name):
            raise UsageError(f"invalid network namespace name {netns.name!r}")
        return "@" + netns.name
    path = netns.path if netns.path is not None else f"/proc/{int(netns.pid)}/ns/net"  # type: ignore[arg-type]
    if not _PATH.match(path) or ".." in path.split("/"):
        raise UsageError(f"invalid network namespace path {path!r}")
    return "%" + path


def check_dir(path: str) -> str:
    """A netns directory argument for DISCOVERY_SCRIPT (absolute, plain characters)."""
    if not _PATH.match(path) or ".." in path.split("/"):
        raise UsageError(f"invalid network namespace directory {path!r}")
    return path


def _seconds(timeout: float) -> int:
    return max(1, math.ceil(timeout))


def batch_argv(
    nonce: str,
    timeout: float,
    items: Sequence[tuple[NetnsRef | None, Sequence[str]]],
    *,
    factors: dict[tuple[str, ...], float] | None = None,
    max_output: int | None = None,
) -> list[str]:
    """The exec argv for running `items` ((netns, catalogue argv) pairs) in one round trip.

    Each command gets `timeout` x its factor in `factors` (default 1): a `tSECS` token is
    sent wherever that changes.
    """
    if not _NONCE.match(nonce):
        raise UsageError("batch nonce must be 32 hex digits")
    base = _seconds(timeout)
    args = ["sh", "-c", SCRIPT, "sh", nonce, str(base)]
    if max_output is not None:
        args.append(f"c{int(max_output) + 1}")
    current: str | None = None
    current_t = base
    for netns, argv in items:
        token = netns_token(netns)
        if token != current:
            args.append(token)
            current = token
        index = INDEX.get(tuple(argv))
        if index is None:
            raise UsageError(f"not in the command catalogue: {shlex.join(argv)}")
        own = _seconds(timeout * (factors or {}).get(tuple(argv), 1.0))
        if own != current_t:
            args.append(f"t{own}")
            current_t = own
        args.append(str(index))
    return args


def discovery_argv(nonce: str, directory: str, host_proc: str | None = None) -> list[str]:
    """The exec argv that lists `directory`'s netns files and each one's addresses (or,
    `directory` absent, one process per netns under `host_proc`: see DISCOVERY_SCRIPT)."""
    if not _NONCE.match(nonce):
        raise UsageError("batch nonce must be 32 hex digits")
    argv = ["sh", "-c", DISCOVERY_SCRIPT, "sh", nonce, check_dir(directory)]
    if host_proc is not None:
        argv.append(check_dir(host_proc))
    return argv


def new_nonce() -> str:
    return secrets.token_hex(16)


# --------------------------------------------------------------------------- allowlist

_TOKEN = re.compile(
    r"^(=|@[a-z0-9][-a-z0-9.]*|%/[A-Za-z0-9._/-]+|\d{1,4}|t\d{1,6}|c\d{1,15}|k[np])$"
)


def is_allowed(argv: Sequence[str]) -> bool:
    """May a remote transport send `argv`? Only these shapes ever may:

    - a catalogue argv exactly (`specs.NETNS_SPECS` / `VERSION_SPECS`), or a ztunnel
      admin read exactly (`specs.ZTUNNEL_SPECS`);
    - `sh -c SCRIPT sh NONCE TIMEOUT TOKEN...` with the batch SCRIPT constant and tokens of
      the documented shapes (netns names DNS-1123, paths plain and without `..`);
    - `sh -c DISCOVERY_SCRIPT sh NONCE DIR [PROC]`.
    """
    argv = tuple(argv)
    if argv in INDEX or argv in ADMIN:
        return True
    if len(argv) < 6 or argv[:2] != ("sh", "-c") or argv[3] != "sh" or not _NONCE.match(argv[4]):
        return False
    if argv[2] == SCRIPT:
        if not argv[5].isdigit():
            return False
        for token in argv[6:]:
            if not _TOKEN.match(token) or ".." in token.split("/"):
                return False
            if token.startswith("@") and not valid_name(token[1:]):
                return False
            if token.isdigit() and int(token) >= len(CATALOGUE):
                return False
        return True
    if argv[2] == DISCOVERY_SCRIPT and len(argv) in (6, 7):
        return all(_PATH.match(a) and ".." not in a.split("/") for a in argv[5:])
    return False


class AllowlistTransport:
    """The choke point in front of every remote transport: nothing but `is_allowed` argv
    reaches docker, the API server or sshd (perf-reliability.md S4)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = inner.name

    def describe_wrapper(self, netns: NetnsRef) -> tuple[str, ...]:
        describe = getattr(self.inner, "describe_wrapper", None)
        return tuple(describe(netns)) if callable(describe) else netns.wrapper()

    def run(self, argv: Sequence[str], *, netns: NetnsRef | None, timeout: float) -> ExecResult:
        if not is_allowed(argv):
            shown = (
                shlex.join(argv)[:120]
                if argv and argv[0] != "sh"
                else "sh -c <not the batch script>"
            )
            raise TransportError(
                f"refusing to send a command outside the read-only catalogue: {shown}"
            )
        if netns is not None:
            netns_token(netns)  # names and paths validated here too, before any transport
        return self.inner.run(argv, netns=netns, timeout=timeout)

    def close(self) -> None:
        self.inner.close()


def netns_identity(stdout: bytes, nonce: str) -> int | None:
    """The netns inode from the batch's `NONCE I net:[INODE]` line (printed before the
    first command, from the batch shell's own netns, where its commands run), or None
    when the target could not tell (no readlink, no /proc)."""
    m = re.search(rb"(?m)^" + nonce.encode() + rb" I net:\[(\d+)\]$", stdout[:4096])
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------- splitting


@dataclass(frozen=True, slots=True)
class Piece:
    """One command's share of a batch's output."""

    index: int
    stdout: bytes
    stderr: bytes
    exit_code: int | None  # None: the command never finished (batch cut short)
    timed_out: bool
    duration_ms: int


def _pieces(data: bytes, nonce: bytes) -> dict[int, tuple[bytes, list[bytes] | None]]:
    """index -> (bytes between the markers, end-marker fields, or None if unfinished).

    Linear: one forward scan with `bytes.find`; the nonce is random per batch, so it
    cannot occur in a command's output by accident.
    """
    out: dict[int, tuple[bytes, list[bytes] | None]] = {}
    begin_tag = nonce + b" B "
    end_tag = b"\n" + nonce + b" E "
    pos = 0
    while (b := data.find(begin_tag, pos)) >= 0:
        eol = data.find(b"\n", b)
        if eol < 0:
            break
        try:
            index = int(data[b + len(begin_tag) : eol])
        except ValueError:
            break
        start = eol + 1
        e = data.find(end_tag, start)
        if e < 0:  # cut short while this command ran: keep what arrived
            out[index] = (data[start:], None)
            break
        eol2 = data.find(b"\n", e + len(end_tag))
        if eol2 < 0:
            eol2 = len(data)
        out[index] = (data[start:e], data[e + len(end_tag) : eol2].split(b" "))
        pos = eol2
    return out


def split_batch(stdout: bytes, stderr: bytes, nonce: str) -> dict[int, Piece]:
    """Split a batch's two streams back into per-command pieces (see module docstring)."""
    tag = nonce.encode()
    outs = _pieces(stdout, tag)
    errs = _pieces(stderr, tag)
    pieces: dict[int, Piece] = {}
    for index, (body, fields) in outs.items():
        err = errs.get(index, (b"", None))[0]
        if fields is None or len(fields) < 2:
            pieces[index] = Piece(index, body, err, None, False, 0)
            continue
        try:
            code = int(fields[1])
        except ValueError:
            code = None
        wrapped = fields[2:3] == [b"1"]
        duration = 0
        if len(fields) >= 5 and fields[3].isdigit() and fields[4].isdigit():
            duration = max(0, (int(fields[4]) - int(fields[3])) // 1_000_000)
        # coreutils timeout(1): 124 when the command timed out (TERM), 137 after -k KILL.
        timed_out = wrapped and code in (124, 137)
        pieces[index] = Piece(index, body, err, code, timed_out, duration)
    return pieces


def split_segments(
    stdout: bytes, stderr: bytes, nonce: str
) -> dict[str, tuple[int | None, dict[int, Piece]]]:
    """netns token -> (its netns inode, its pieces), from a batch covering several netns.

    Linear, like `split_batch`: the streams are cut at the `S` markers (see the module
    docstring), each segment split on its own.
    """
    tag = nonce.encode() + b" S "

    def cut(data: bytes) -> dict[str, tuple[bytes, bytes]]:
        found: dict[str, tuple[bytes, bytes]] = {}
        starts: list[tuple[int, int, bytes]] = []  # (marker start, body start, marker line)
        pos = 0
        while (b := data.find(tag, pos)) >= 0:
            if b and data[b - 1 : b] != b"\n":
                pos = b + 1
                continue
            eol = data.find(b"\n", b)
            eol = len(data) if eol < 0 else eol
            starts.append((b, eol + 1, data[b + len(tag) : eol]))
            pos = eol + 1
        for i, (_, body, line) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else len(data)
            token, _, rest = line.decode("utf-8", "replace").partition(" ")
            found[token] = (data[body:end], rest.encode())
        return found

    outs, errs = cut(stdout), cut(stderr)
    segments: dict[str, tuple[int | None, dict[int, Piece]]] = {}
    for token, (body, rest) in outs.items():
        m = re.fullmatch(rb"net:\[(\d+)\]", rest.strip())
        inode = int(m.group(1)) if m else None
        segments[token] = (inode, split_batch(body, errs.get(token, (b"", b""))[0], nonce))
    return segments


# --------------------------------------------------------------------------- transport


def _layers(transport: object) -> Iterator[object]:
    """`transport` and the transports under its wrappers (`.inner`), outermost first."""
    for _ in range(8):  # a bound, not a depth any wrapping reaches
        if transport is None:
            return
        yield transport
        transport = getattr(transport, "inner", None)


def _argv_limit(transport: object) -> tuple[Callable[[Sequence[str]], int], int] | None:
    """(cost of args, bytes available) of the transport under the wrappers whose exec
    request bounds the argv (`argv_cost`, `argv_budget`: the Kubernetes exec URL), if any."""
    for layer in _layers(transport):
        cost, budget = getattr(layer, "argv_cost", None), getattr(layer, "argv_budget", None)
        if callable(cost) and callable(budget):
            return cost, int(budget())
    return None


def _cap_holder(transport: object) -> object | None:
    """The transport under the wrappers (`.inner`) that holds the stream cap, if any."""
    for layer in _layers(transport):
        if isinstance(getattr(layer, "max_output", None), int) and not hasattr(layer, "inner"):
            return layer
    return None


def batch_for(netns: NetnsRef | str | None) -> tuple[tuple[str, ...], ...]:
    """What one round trip runs for a target (or a kind): its kind's specs (+ versions
    for nodes)."""
    kind = netns if isinstance(netns, str) else getattr(netns, "kind", None)
    if kind in ("node", "pod"):
        argvs = [s.argv for s in specs_for(kind)]
        if kind == "node":
            argvs += [v.argv for v in VERSION_SPECS]
    else:
        argvs = [s.argv for s in NETNS_SPECS]
    return tuple(dict.fromkeys(argvs))


SCRIPT: str = _build_script(CATALOGUE)


def node_batch_argv(
    nonce: str,
    timeout: float,
    refs: Sequence[NetnsRef],
    *,
    max_output: int | None = None,
) -> list[str]:
    """The exec argv that runs, in ONE round trip, each of `refs` (a node's own netns and
    its pods') with its kind's whole list: one netns token + one kind token each."""
    if not _NONCE.match(nonce):
        raise UsageError("batch nonce must be 32 hex digits")
    args = ["sh", "-c", SCRIPT, "sh", nonce, str(_seconds(timeout))]
    if max_output is not None:
        args.append(f"c{int(max_output) + 1}")
    for ref in refs:
        kind = getattr(ref, "kind", None)
        if kind not in KIND_TOKENS:
            raise UsageError(f"no batch list for a {kind or 'plain'} netns")
        args += [netns_token(ref), KIND_TOKENS[kind]]
    return args


class BatchingTransport:
    """A transport that answers a target's commands from one batched round trip."""

    def __init__(
        self,
        inner: Transport,
        *,
        target_timeout: float | None = None,
        command_timeout: float | None = None,
        max_output: int | None = None,
    ) -> None:
        """`target_timeout`: the whole batch's deadline (the runner's per-target deadline);
        `command_timeout`: the base per-command timeout inside the batch (x each spec's
        `timeout_factor`); both default to what the first `run()` call is given."""
        self.inner = inner
        self.name = inner.name
        self.target_timeout = target_timeout
        self.command_timeout = command_timeout
        self.max_output = max_output  # per-command stdout cap (None: no cap)
        self._lock = threading.Lock()
        self._netns_locks: dict[object, threading.Lock] = {}
        self._cache: dict[object, dict[tuple[str, ...], ExecResult]] = {}
        self._unbatchable = False  # no sh on this target: one exec per command from now on
        self.round_trips = 0
        self.netns_inodes: dict[object, int] = {}  # netns key -> inode the batch ran in
        # netns this transport will be asked about (`expect`): one batch covers them all
        self._expected: dict[object, NetnsRef] = {}
        self._node_lock = threading.Lock()
        self._stream_cap: tuple[object, int] | None = None  # (inner holder, per-netns cap)
        self._cut = False  # a node batch was refused as too long: send them in groups

    def describe_wrapper(self, netns: NetnsRef) -> tuple[str, ...]:
        describe = getattr(self.inner, "describe_wrapper", None)
        return tuple(describe(netns)) if callable(describe) else netns.wrapper()

    def _key(self, netns: NetnsRef | None) -> object:
        return (None,) if netns is None else (netns.name, netns.path, netns.pid)

    def expect(self, refs: Sequence[NetnsRef]) -> None:
        """Announce every netns this transport will be asked about (a node's own and its
        pods'): the first `run()` for any of them sends ONE batch covering all of them -
        one round trip per node, not per netns (module docstring: segments). The inner
        transport's stream cap (per-netns, see `live.stream_cap`) grows to match."""
        with self._lock:
            for ref in refs:
                netns_token(ref)  # validated before anything is sent
                self._expected.setdefault(self._key(ref), ref)
            holder = _cap_holder(self.inner)
            if holder is not None:
                if self._stream_cap is None:
                    self._stream_cap = (holder, holder.max_output)  # type: ignore[attr-defined]
                per_netns = self._stream_cap[1]
                holder.max_output = per_netns * max(1, len(self._expected))  # type: ignore[attr-defined]

    def run(self, argv: Sequence[str], *, netns: NetnsRef | None, timeout: float) -> ExecResult:
        argv = tuple(argv)
        key = self._key(netns)
        with self._lock:
            node_wide = key in self._expected
            lock = self._node_lock if node_wide else self._netns_locks.setdefault(
                key, threading.Lock()
            )
        with lock:
            if key not in self._cache and not self._unbatchable and argv in INDEX:
                if node_wide:
                    self._run_node_batch(timeout)
                if key not in self._cache and not self._unbatchable:
                    self._cache[key] = self._run_batch(netns, timeout)
            results = self._cache.get(key, {})
            cached = results.pop(argv, None)
            if cached is not None and not results:
                # all answered: a dict emptied by pop() keeps its table (~1.1 KB per netns,
                # 28 MiB at 500 x 50); the key stays, saying this netns was batched
                self._cache[key] = {}
        if cached is not None:
            return cached
        return self._capped(self.inner.run(argv, netns=netns, timeout=timeout))

    def _capped(self, res: ExecResult) -> ExecResult:
        """`res` flagged `truncated` (stdout dropped) if its stdout is longer than
        `max_output` (the node's `head -c` passes one byte more than the cap to tell)."""
        if self.max_output is None or len(res.stdout) <= self.max_output:
            return res
        return dataclasses.replace(res, stdout=b"", truncated=True)

    def _run_node_batch(self, timeout: float) -> None:
        """One exec for every expected netns not answered yet (caller holds the node
        lock): each netns's segment fills its cache. The whole batch gets the target
        deadline once (`target_timeout`): a hung node costs it once, not per netns.

        One exec, unless the transport refuses its request as too long
        (`RequestTooLong`: an 8 KiB proxy in front of the API server, ~40 pods with
        istio-cni's netns names): then it is sent again cut into groups that fit
        (`_node_groups`), and so is every later batch of this transport; the groups run
        one after the other within the same deadline, and a group the deadline leaves no
        time for is answered "timed out", never sent. An API server reached directly
        (1 MiB) keeps one exec per node."""
        with self._lock:
            pending = [(k, r) for k, r in self._expected.items() if k not in self._cache]
        if not pending:
            return
        base = self.command_timeout or timeout
        deadline = Deadline(self.target_timeout or sum(
            base * FACTOR.get(a, 1.0) for _, ref in pending for a in batch_for(ref)
        ))
        refs = [ref for _, ref in pending]
        queue = self._node_groups(base, refs) if self._cut else [refs]
        while queue:
            group = queue.pop(0)
            if self._unbatchable:
                return
            remaining = deadline.remaining()
            if remaining <= 0:
                cut = ExecResult(None, b"", b"", deadline.elapsed_ms(), timed_out=True)
                for ref in group:
                    self._cache[self._key(ref)] = self._results(batch_for(ref), {}, cut)
                continue
            try:
                self._run_node_group(group, base, remaining)
            except RequestTooLong:
                groups = self._node_groups(base, group)
                if self._cut or len(groups) < 2:
                    raise  # cut already, or nothing to cut: the error stands
                self._cut = True
                queue = groups + queue

    def _node_groups(self, base: float, refs: list[NetnsRef]) -> list[list[NetnsRef]]:
        """`refs` cut, in order, into groups whose batch argv fits the transport's request
        (`_argv_limit`: with this catalogue ~20 pods' tokens fit beside the script in an
        8 KiB exec URL); one group when the transport has no such limit. A netns is never
        split."""
        limit = _argv_limit(self.inner)
        if limit is None or len(refs) < 2:
            return [refs]
        cost, room = limit
        room -= cost(node_batch_argv("0" * 32, base, [], max_output=self.max_output))
        groups: list[list[NetnsRef]] = [[]]
        used = 0
        for ref in refs:
            need = cost([netns_token(ref), KIND_TOKENS.get(getattr(ref, "kind", ""), "")])
            if groups[-1] and used + need > room:
                groups.append([])
                used = 0
            groups[-1].append(ref)
            used += need
        return groups

    def _run_node_group(self, refs: list[NetnsRef], base: float, timeout: float) -> None:
        """One exec running every netns of `refs`; each one's segment fills its cache."""
        nonce = new_nonce()
        self.round_trips += 1
        res = self.inner.run(
            node_batch_argv(nonce, base, refs, max_output=self.max_output),
            netns=None,
            timeout=timeout,
        )
        if res.not_found:
            self._unbatchable = True
            return
        segments = split_segments(res.stdout, res.stderr, nonce)
        for ref in refs:
            token, key = netns_token(ref), self._key(ref)
            inode, pieces = segments.get(token, (None, {}))
            if inode is not None:
                self.netns_inodes[key] = inode
            if token not in segments and not res.timed_out:
                continue  # never reached and not cut by the deadline: its own batch later
            self._cache[key] = self._results(batch_for(ref), pieces, res)

    def _results(
        self, argvs: Sequence[tuple[str, ...]], pieces: dict[int, Piece], res: ExecResult
    ) -> dict[tuple[str, ...], ExecResult]:
        """Each command's result from its piece of a batch `res` (see `_run_batch`)."""
        results: dict[tuple[str, ...], ExecResult] = {}
        for piece in pieces.values():
            if not 0 <= piece.index < len(CATALOGUE):
                continue
            argv = CATALOGUE[piece.index]
            if piece.exit_code is None:
                if res.timed_out:  # cut by the per-target deadline while this one ran
                    results[argv] = ExecResult(
                        None, piece.stdout, piece.stderr, res.duration_ms, timed_out=True
                    )
                continue
            results[argv] = self._capped(
                ExecResult(
                    exit_code=None if piece.timed_out else piece.exit_code,
                    stdout=piece.stdout,
                    stderr=piece.stderr,
                    duration_ms=piece.duration_ms,
                    timed_out=piece.timed_out,
                    not_found=not piece.timed_out
                    and missing_binary(piece.exit_code, piece.stderr),
                )
            )
        if res.timed_out:
            # The deadline cut the batch: what it never reached is not retried one by one
            # (a hung node would cost the deadline again per command); it timed out too.
            for argv in argvs:
                results.setdefault(
                    argv, ExecResult(None, b"", b"", res.duration_ms, timed_out=True)
                )
        # Otherwise (output not splittable), commands the batch never reached are run one
        # by one by `run()` (cache miss).
        return results

    def _run_batch(
        self, netns: NetnsRef | None, timeout: float
    ) -> dict[tuple[str, ...], ExecResult]:
        argvs = batch_for(netns)
        nonce = new_nonce()
        base = self.command_timeout or timeout
        budget = self.target_timeout or sum(base * FACTOR.get(a, 1.0) for a in argvs)
        self.round_trips += 1
        res = self.inner.run(
            batch_argv(
                nonce, base, [(None, a) for a in argvs], factors=FACTOR, max_output=self.max_output
            ),
            netns=netns,
            timeout=budget,
        )
        if res.not_found:
            self._unbatchable = True
            return {}
        inode = netns_identity(res.stdout, nonce)
        if inode is not None:
            self.netns_inodes[self._key(netns)] = inode
        return self._results(argvs, split_batch(res.stdout, res.stderr, nonce), res)

    def netns_inode(self, netns: NetnsRef | None) -> int | None:
        """The inode of the netns `netns`'s batch ran in (None: not batched / unknown)."""
        return self.netns_inodes.get(self._key(netns))

    def close(self) -> None:
        self.inner.close()
