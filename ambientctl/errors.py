"""Errors that carry a user-facing message and a hint, and the CLI's exit codes.

The CLI turns every `AmbientError` into one `error:` line (plus an optional `hint:` line)
on stderr and the error's exit code; anything else is a bug (exit 5).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes: part of the CLI's documented interface."""

    OK = 0
    FINDINGS = 1  # doctor: findings at/above --fail-on; trace: --expect not met
    USAGE = 2  # bad flags (click's own code)
    COLLECTION = 3  # nothing could be collected / no cluster reachable
    BUNDLE = 4  # bundle unreadable, malformed file, missing file, hash mismatch
    INTERNAL = 5  # a bug in ambientctl
    NOT_FOUND = 6  # SRC/DST unknown or ambiguous
    PARTIAL = 7  # collect: some targets/commands failed, bundle written and marked partial
    INTERRUPTED = 130


class AmbientError(Exception):
    """Base of all expected errors: `message` names what and where, `hint` says what to do."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(AmbientError):
    """The command line asks for something impossible."""

    exit_code = ExitCode.USAGE


class BundleError(AmbientError):
    """A bundle (or a file in it) cannot be read or trusted."""

    exit_code = ExitCode.BUNDLE


class ParseError(BundleError):
    """A raw file is malformed. Carries the bundle path and 1-based line."""

    def __init__(self, path: str, line: int | None, message: str, hint: str | None = None) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}", hint)
        self.path = path
        self.line = line
        self.reason = message


class SelectorError(AmbientError):
    """SRC or DST does not name exactly one pod, service or address."""

    exit_code = ExitCode.NOT_FOUND


class CollectionError(AmbientError):
    """Nothing could be collected (no cluster, no node reachable)."""

    exit_code = ExitCode.COLLECTION


class TransportError(AmbientError):
    """A transport (docker, kubernetes exec, ssh, local) failed for one target."""

    exit_code = ExitCode.COLLECTION


class RequestTooLong(TransportError):
    """The exec request itself was refused as too long (HTTP 414 URI Too Long / 431): a
    proxy in front of the API server with an 8 KiB request line, not the command."""
