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


# What one command's stdout may hold (`--max-output`): bounds a collector's memory whatever
# a node prints. 256 MiB is ~3.5x the largest dump measured (iptables-save of 630k rules:
# ~70 MB) and well under what 8 concurrent targets may hold on a laptop.
DEFAULT_MAX_OUTPUT = 256 * 1024 * 1024
STDERR_CAP = 1024 * 1024  # stderr kept per exec (the manifest keeps 4 KiB of it)


class CappedBuffer:
    """Bytes received from a stream, at most `cap` of them, and how many came in total.

    A transport appends every chunk it reads. Once more than `cap` bytes came, what was
    kept is dropped too (a cut output is never stored - the runner records it
    `truncated` - so holding it would only cost memory) and later chunks are only
    counted: memory stays under `cap` while the stream is still drained to its end (the
    command finishes normally and its exit code is still known).
    """

    __slots__ = ("_buf", "cap", "seen")

    def __init__(self, cap: int | None) -> None:
        self._buf = bytearray()
        self.cap = cap
        self.seen = 0

    def append(self, chunk: bytes | memoryview) -> None:
        self.seen += len(chunk)
        if self.cap is None:
            self._buf += chunk
            return
        if self.seen > self.cap:
            self._buf = bytearray()
        else:
            self._buf += chunk

    @property
    def truncated(self) -> bool:
        return self.cap is not None and self.seen > self.cap

    def getvalue(self) -> bytes:
        return bytes(self._buf)


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
