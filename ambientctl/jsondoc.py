"""Bounded JSON decoding for bundle files: one loader for the reader and the parsers.

Why its own module: the bundle reader (manifest.json) and the analyzers' parsers must decode
JSON the same way — malformed, truncated and too deeply nested input all become a
`ParseError` naming the file and line (never `RecursionError` or `JSONDecodeError`) — and
the bundle package must not import the analyzers (tests/test_architecture.py).
"""

from __future__ import annotations

import json
from json.decoder import WHITESPACE  # type: ignore[attr-defined]
from typing import Any

from ambientctl.errors import ParseError

_DECODER = json.JSONDecoder()


def line_of_offset(text: str, offset: int) -> int:
    """1-based line number of a character offset."""
    return text.count("\n", 0, offset) + 1


def _json_error(path: str, text: str, exc: json.JSONDecodeError, what: str) -> ParseError:
    # A cut document fails at (or a few characters before) its end — inside a literal like
    # "tr" — or inside a string that never closes; damage elsewhere leaves text after it.
    if exc.msg.startswith("Unterminated string") or len(text[exc.pos :].strip()) < 16:
        reason = f"{what} ends early (truncated capture?): {exc.msg}"
    else:
        reason = f"{what} is not valid JSON: {exc.msg} (column {exc.colno})"
    return ParseError(
        path, exc.lineno, reason, hint="re-collect the file; it must be complete JSON"
    )


def _too_deep(path: str, text: str, pos: int, what: str) -> ParseError:
    # Python's JSON decoder recurses once per nesting level and gives up near the
    # interpreter's recursion limit (~1000): real captures nest < 20 levels.
    return ParseError(path, line_of_offset(text, pos),
                      f"{what} is nested too deeply to be a real capture (hostile or damaged)",
                      hint="re-collect the file")


def raw_decode(text: str, pos: int, path: str, what: str) -> tuple[Any, int]:
    """One JSON value at `pos` (the C decoder), errors as `ParseError` with a line."""
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise _json_error(path, text, exc, what) from None
    except RecursionError:
        raise _too_deep(path, text, pos, what) from None


def load_json(text: str, path: str, what: str = "JSON document") -> Any:
    """A whole JSON document, or a `ParseError` naming the file and line.

    The one JSON loader for bundle files: malformed, truncated and too deeply nested
    input all become data errors (never `RecursionError` or `JSONDecodeError`).
    """
    pos = _skip_ws(text, 0)
    value, end = raw_decode(text, pos, path, what)
    rest = _skip_ws(text, end)
    if rest != len(text):
        raise ParseError(path, line_of_offset(text, rest),
                         f"{what}: unexpected data after the JSON document")
    return value


def _skip_ws(text: str, pos: int) -> int:
    return WHITESPACE.match(text, pos).end()
