"""Helpers shared by the parsers: line splitting, JSON arrays with line numbers, addresses.

Why a private module: every parser needs the same three things done the same way —
1-based line numbers that agree with `sed -n Np`, JSON decoding that reports *where* a
truncated capture ends, and address parsing that turns `ValueError` into `ParseError`.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Iterator
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

from ambientctl import model
from ambientctl.errors import ParseError

# The bounded JSON decoder lives outside the analyzers (the bundle reader needs it too);
# these names are re-exported for the parsers.
from ambientctl.jsondoc import (  # noqa: F401
    _json_error,
    _skip_ws,
    line_of_offset,
    load_json,
    raw_decode,
)


def split_lines(text: str) -> list[str]:
    """The file's lines, numbered like `sed`/editors do (line i is `lines[i - 1]`).

    Only "\\n" ends a line (`str.splitlines` would also split on form feeds and other
    control characters that garbage input may contain, shifting every later line number);
    a "\\r" before it (a capture that went through a Windows editor) is dropped. A final
    empty string after a trailing newline is removed.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def first_content_char(text: str) -> str:
    """The first non-whitespace character, "" for a blank file (format auto-detection)."""
    stripped = text.lstrip()
    return stripped[:1]


class LineCounter:
    """Incremental offset -> line conversion for increasing offsets (linear overall)."""

    __slots__ = ("line", "offset", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.offset = 0
        self.line = 1

    def at(self, offset: int) -> int:
        """1-based line of `offset`; cheap when offsets only grow."""
        if offset < self.offset:  # not expected, but stay correct
            self.offset, self.line = 0, 1
        self.line += self.text.count("\n", self.offset, offset)
        self.offset = offset
        return self.line


def json_type_error(path: str, line: int | None, where: str, expected: str,
                    value: Any) -> ParseError:
    """`"entries": 5` and its kin: a JSON value of the wrong type, named by its JSON path."""
    return ParseError(path, line, f"{where} is {_json_type(value)}, expected {expected}")


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value),
                                                                       type(value).__name__)


def iter_json_array(text: str, path: str, what: str) -> Iterator[tuple[int, Any]]:
    """Yield (line, element) for each element of a top-level JSON array.

    Elements are decoded one by one with the C decoder (`raw_decode`), so each keeps the
    line where it starts (a pretty-printed `ip -j -p` file gets real line numbers, a
    compact one gets line 1) and a capture cut in half fails with the line where it ends.
    """
    for _start, _end, line, value in iter_json_spans(text, path, what, document=False):
        yield line, value


def iter_json_document(text: str, path: str, what: str) -> Iterator[tuple[int, Any]]:
    """Yield (line, item) for a kubectl document: a v1 List, a bare array or one object."""
    for _start, _end, line, value in iter_json_spans(text, path, what, document=True):
        yield line, value


def iter_json_spans(
    text: str, path: str, what: str, *, document: bool
) -> Iterator[tuple[int, int, int, Any]]:
    """Yield (start offset, end offset, line, value) per element.

    `document=False`: the text must be one JSON array. `document=True`: also a v1 List
    object (its `items` are the elements; other keys are decoded and ignored) or a single
    object (the only element).
    """
    counter = LineCounter(text)
    pos = _skip_ws(text, 0)
    head = text[pos : pos + 1]
    if head == "[":
        yield from _array_spans(text, pos, path, what, counter, top=True)
        return
    if not document:
        raise ParseError(path, counter.at(pos), f"{what}: expected a JSON array")
    if head != "{":
        raise ParseError(path, counter.at(pos), f"{what}: expected a JSON object or array")
    start = pos
    top: dict[str, Any] = {}
    items: list[tuple[int, int, int, Any]] | None = None
    pos = _skip_ws(text, pos + 1)
    try:
        if text[pos : pos + 1] == "}":
            pos += 1
        else:
            while True:
                if text[pos : pos + 1] != '"':
                    if pos >= len(text):
                        raise ParseError(
                            path, counter.at(pos), f"{what} ends early (truncated capture?)"
                        )
                    raise ParseError(path, counter.at(pos), f"{what}: expected a property name")
                key, pos = scanstring(text, pos + 1)
                pos = _skip_ws(text, pos)
                if text[pos : pos + 1] != ":":
                    raise ParseError(path, counter.at(pos), f"{what}: expected ':' after {key!r}")
                pos = _skip_ws(text, pos + 1)
                if key == "items" and text[pos : pos + 1] == "[":
                    items = list(_array_spans(text, pos, path, what, counter, top=False))
                    pos = items.pop()[1] if items and items[-1][3] is _END else pos
                else:
                    top[key], pos = raw_decode(text, pos, path, what)
                pos = _skip_ws(text, pos)
                sep = text[pos : pos + 1]
                if sep == ",":
                    pos = _skip_ws(text, pos + 1)
                    continue
                if sep == "}":
                    pos += 1
                    break
                if sep == "":
                    raise ParseError(
                        path, counter.at(pos), f"{what} ends early (truncated capture?)"
                    )
                raise ParseError(path, counter.at(pos), f"{what}: expected ',' or '}}' in object")
    except json.JSONDecodeError as exc:
        raise _json_error(path, text, exc, what) from None
    rest = _skip_ws(text, pos)
    if rest != len(text):
        raise ParseError(path, counter.at(rest), f"{what}: unexpected data after the JSON document")
    if items is not None:
        yield from items
    elif "items" in top:
        raise ParseError(path, None, f"{what}: 'items' is not an array")
    else:
        yield start, pos, line_of_offset(text, start), top


_END = object()  # sentinel element carrying the offset after a nested array


def _array_spans(
    text: str, pos: int, path: str, what: str, counter: LineCounter, *, top: bool
) -> Iterator[tuple[int, int, int, Any]]:
    """Elements of the array starting at `pos` (a "["); nested arrays end with an _END span."""
    pos = _skip_ws(text, pos + 1)
    if text[pos : pos + 1] == "]":
        pos += 1
    else:
        while True:
            value, end = raw_decode(text, pos, path, what)
            yield pos, end, counter.at(pos), value
            pos = _skip_ws(text, end)
            sep = text[pos : pos + 1]
            if sep == ",":
                pos = _skip_ws(text, pos + 1)
                continue
            if sep == "]":
                pos += 1
                break
            if sep == "":
                raise ParseError(path, counter.at(pos), f"{what} ends early (truncated capture?)")
            raise ParseError(path, counter.at(pos), f"{what}: expected ',' or ']' in array")
    if top:
        rest = _skip_ws(text, pos)
        if rest != len(text):
            raise ParseError(
                path, counter.at(rest), f"{what}: unexpected data after the JSON array"
            )
    else:
        yield pos, pos, 0, _END


def compact_json(obj: Any) -> str:
    """An element re-serialised on one line: the `SourceRef.text` of a JSON fact."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=False)


# Address texts parsed once per process (bounded): the same few hundred addresses and
# prefixes (loopback, the node's gateway, pod CIDRs, `ff00::/8`) recur in every pod's
# `ip addr`/`ip route`/`ip rule`, and ipaddress parses in pure Python (issue 12: ~5% of a
# 200-node doctor). The objects are immutable and equal whoever asks; a bad text raises
# each time (exceptions are not cached). Strings only: `True` and `1` would share a key.
_ADDR_CACHE = 4096


@functools.lru_cache(maxsize=_ADDR_CACHE)
def _address(value: str) -> model.IPAddress:
    return ipaddress.ip_address(value)


@functools.lru_cache(maxsize=_ADDR_CACHE)
def _network(value: str) -> model.IPNetwork:
    return ipaddress.ip_network(value, strict=False)


@functools.lru_cache(maxsize=_ADDR_CACHE)
def _interface(value: str) -> model.IPInterface:
    return ipaddress.ip_interface(value)


def ip_address(value: str, path: str, line: int | None, what: str) -> model.IPAddress:
    """An address, or ParseError naming `what` (e.g. "gateway")."""
    try:
        return _address(value) if type(value) is str else ipaddress.ip_address(value)
    except ValueError:
        raise ParseError(path, line, f"{what} {value!r} is not an IP address") from None


def ip_network(value: str, path: str, line: int | None, what: str) -> model.IPNetwork:
    """A prefix; a bare address means a host route (/32 or /128), host bits are tolerated."""
    try:
        return (_network(value) if type(value) is str
                else ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ParseError(path, line, f"{what} {value!r} is not an IP prefix") from None


def ip_interface(value: str, path: str, line: int | None, what: str) -> model.IPInterface:
    """An address with its prefix length (`10.244.1.7/24`)."""
    try:
        return _interface(value) if type(value) is str else ipaddress.ip_interface(value)
    except ValueError:
        raise ParseError(path, line, f"{what} {value!r} is not an address/prefix") from None


def to_int(value: str, path: str, line: int | None, what: str, base: int = 10) -> int:
    """An integer (base 0 accepts 0x...), or ParseError naming `what`."""
    try:
        return int(value, base)
    except (TypeError, ValueError):
        raise ParseError(path, line, f"{what} {value!r} is not a number") from None


def shorten(text: str, limit: int = 80) -> str:
    """A line for an error message: repr-quoted and cut, so garbage stays on one line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
