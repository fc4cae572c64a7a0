"""Shared by the remote transports: deadlines and "was the binary missing?".

A missing binary is data (RawStatus.NOT_FOUND: distroless ztunnel images have no
iptables), not a failure of the transport, so every transport must recognise it the same
way. Each entry point reports it differently, and only these exact shapes count:

- POSIX shells and coreutils-style wrappers exit 127 ("command not found", sh(1p) "Exit
  Status"); `nsenter` exits 127 too; Docker's exec start maps "executable file not found"
  to exit code 127 (moby `translateContainerdStartErr`).
- `ip netns exec NAME BIN` prints `exec of "BIN" failed: No such file or directory` and
  exits 1 (iproute2 6.1; 255 on older releases), so the message, not the code, decides.
- `sudo -n BIN` prints `sudo: BIN: command not found` and exits 1.
- Kubernetes exec reports the container runtime's "executable file not found in $PATH" /
  `exec: "/abs/path": stat ...: no such file or directory` in the error-channel Status.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

_IP_NETNS_EXEC = re.compile(
    rb'^exec of "[^"]*" failed: No such file or directory\s*$', re.MULTILINE
)
_SUDO = re.compile(rb"^sudo: [^:\n]+: command not found\s*$", re.MULTILINE)
_RUNTIME = re.compile(
    r'executable file not found|exec: "[^"]*": stat [^:]*: no such file or directory', re.IGNORECASE
)


def missing_binary(exit_code: int | None, stderr: bytes) -> bool:
    """True when the process could not start because the binary does not exist."""
    if exit_code == 127:
        return True
    if exit_code in (1, 255) and _IP_NETNS_EXEC.search(stderr[-4096:]):
        return True
    return exit_code == 1 and bool(_SUDO.search(stderr[-4096:]))


def runtime_says_missing(message: str) -> bool:
    """True when a container runtime's exec error says the binary does not exist."""
    return bool(_RUNTIME.search(message))


@dataclass(slots=True)
class Deadline:
    """A monotonic deadline: `remaining()` never goes below zero."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return max(0.0, self.started + self.seconds - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)
