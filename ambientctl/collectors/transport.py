"""The transport interface: how one argv reaches one target's network namespace.

Implementations: `local` (subprocess, `ip netns exec`/`nsenter`), `docker` (docker SDK exec
into a kind node container), `kube` (Kubernetes exec API), `ssh` (paramiko). Each is
imported lazily, so offline commands never load the SDKs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ambientctl.raw import ExecResult


@dataclass(frozen=True, slots=True)
class NetnsRef:
    """How to enter a network namespace on a target.

    Exactly one of `name` (a named netns under /var/run/netns, entered with
    `ip netns exec NAME`) or `path` (entered with `nsenter --net=PATH`) or `pid`
    (`nsenter -t PID -n`) is set; all None means the target's own namespace.
    """

    name: str | None = None
    path: str | None = None
    pid: int | None = None

    def wrapper(self) -> tuple[str, ...]:
        """The argv prefix that enters this namespace (empty for the current one)."""
        if self.name is not None:
            return ("ip", "netns", "exec", self.name)
        if self.path is not None:
            return ("nsenter", f"--net={self.path}", "--")
        if self.pid is not None:
            return ("nsenter", "-t", str(self.pid), "-n", "--")
        return ()


class Transport(Protocol):
    """Runs read-only argv vectors on one target."""

    name: str  # "local" | "docker" | "kube" | "ssh"

    def run(self, argv: Sequence[str], *, netns: NetnsRef | None, timeout: float) -> ExecResult:
        """Run one argv (never through a shell) and return its raw result.

        A command that cannot be found returns `ExecResult(not_found=True)`; a timeout
        returns `timed_out=True` with whatever output arrived; an unreachable target
        raises `ambientctl.errors.TransportError`.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...
