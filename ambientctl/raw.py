"""The contract between collectors and the bundle writer: one command's raw result.

Collectors never decode, strip or parse: they return the bytes exactly as received,
with a status that says whether the command ran. A failed command is data, not an
exception: it goes into the manifest and the analyzers report it as missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RawStatus(StrEnum):
    """How one planned command ended."""

    OK = "ok"
    NONZERO_EXIT = "nonzero-exit"
    NOT_FOUND = "not-found"  # the binary is not on the target (distroless ztunnel)
    TIMEOUT = "timeout"
    TRANSPORT_ERROR = "transport-error"  # could not reach the target at all
    SKIPPED = "skipped"  # not run (filtered, interrupted, not applicable)
    # printed more than the per-command output cap (--max-output): not stored, because a
    # cut dump read as if whole would give confident wrong answers
    TRUNCATED = "truncated"


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What a transport returns for one argv: exit code and both streams, as bytes."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes
    duration_ms: int
    timed_out: bool = False
    not_found: bool = False
    truncated: bool = False  # stdout went past the transport's output cap (`stdout` empty)


# How a collection note begins for an optional command whose binary the target lacks
# (`ipvsadm` on a node whose kube-proxy is not in IPVS mode): absent data, not a failure.
# Readers go by the manifest entry's `optional_absent` (RawOutput.optional_absent); the
# prefix is how bundles written before that field said it.
OPTIONAL_ABSENT = "not found: "


@dataclass(frozen=True, slots=True, kw_only=True)
class RawOutput:
    """One planned command's outcome, ready to be stored at `path` in the bundle."""

    path: str  # bundle-relative destination, from bundle.layout
    target: str  # "node/<node>" or "pod/<namespace>/<name>"
    argv: tuple[str, ...]  # as run INSIDE the target's netns
    transport: str  # local | docker | kube | ssh
    status: RawStatus
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    started_at: str  # RFC 3339 UTC
    duration_ms: int
    wrapper: tuple[str, ...] = ()  # how the argv was entered (nsenter/ip netns exec/...)
    note: str | None = None  # reason for skipped / transport error text
    optional_absent: bool = False  # skipped: an optional tool the target lacks (not a failure)
    spilled: tuple[int, str] | None = None
    """(size, sha256) once `stdout` was written to the bundle's staging directory and
    dropped from memory (`stdout` is then empty): collection holds no output longer than
    its target takes."""
