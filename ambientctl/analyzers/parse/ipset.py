"""`ipset list` and `ipset save` output -> `{name: model.IpSet}`.

`ipset list` sample (ipset 7.17; the seed's 2022 capture has the same shape with
`Revision: 0` and no comments)::

    Name: ztunnel-pods-ips
    Type: hash:ip
    Revision: 6
    Header: family inet hashsize 1024 maxelem 65536 comment bucketsize 12 initval 0xd2e243c7
    Size in memory: 310
    References: 1
    Number of entries: 1
    Members:
    10.244.1.5 comment "0ff78312-3a13-4a02-b39d-644bfb91e861"

`ipset save` sample::

    create ztunnel-pods-ips hash:ip family inet hashsize 1024 maxelem 65536 comment bucketsize 12
    add ztunnel-pods-ips 10.244.1.5 comment "0ff78312-3a13-4a02-b39d-644bfb91e861"

Known variants: member options `timeout N`, `packets N bytes N`, `skbmark`, `nomatch`;
multi-dimension members (`10.0.0.1,tcp:80`); `bitmap:port` (`Header: range 0-1024`, no
family) and `list:set` (`Header: size 8`); `ipset list -t` (terse: no `Members:` section, the
set gets no members); ipset 6.x prints no `Number of entries` (`declared_entries=None`).
The format is detected from the first non-blank line (`Name:` or `create`). An empty file
is valid: a node without sets.

Truncation policy. `IpSet.declared_entries` keeps the header's count; the *caller* compares it
with the members and reports a mismatch as a warning, because a mismatch alone is not proof
of damage: the kernel's count includes timed-out entries that garbage collection has not yet
removed, while the listing skips them. This parser raises `ParseError` when truncation is
evident: the file does not end with a newline (ipset ends every line with one, so the last
line — a member that may read "10.244" instead of "10.244.1.6" — was cut); an unterminated
`comment "...`; the last set's header stops early (every version prints Type, Revision,
Header, Size in memory and References); the last set lacks the `Members:` (or `Number of
entries:`) line the other sets have. A listing that ends after a complete member line with
fewer members than declared is returned as is: the caller compares and warns.

>>> sets = parse_ipset("create s hash:ip family inet hashsize 1024 maxelem 65536 comment\\n"
...                    'add s 10.244.1.7 comment "uid-1"\\n', "ipset.txt")
>>> sets["s"].members[0].text, sets["s"].members[0].comment, sets["s"].family
('10.244.1.7', 'uid-1', 'inet')
"""

from __future__ import annotations

from ambientctl import model
from ambientctl.analyzers.parse._common import shorten, split_lines
from ambientctl.errors import ParseError

__all__ = ["parse_ipset"]


def parse_ipset(text: str, path: str) -> dict[str, model.IpSet]:
    """Parse `ipset list` or `ipset save` output (auto-detected)."""
    lines = split_lines(text)
    first = next(((i, ln) for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        return {}
    idx, line = first
    if line.startswith("Name: "):
        return _parse_list(lines, path, complete=text.endswith("\n"))
    if line.startswith("create "):
        return _parse_save(lines, path)
    raise ParseError(
        path,
        idx + 1,
        f"not ipset output: first line {shorten(line)} is neither 'Name: ...' (ipset list)"
        " nor 'create ...' (ipset save)",
    )


def _header_options(
    words: list[str], path: str, line: int
) -> tuple[str | None, int | None, int | None]:
    """family, hashsize and maxelem from `family inet hashsize 1024 maxelem 65536 ...`."""
    family = hashsize = maxelem = None
    for i, word in enumerate(words[:-1]):
        nxt = words[i + 1]
        if word == "family":
            family = nxt
        elif word in ("hashsize", "maxelem"):
            if not nxt.isdigit():
                raise ParseError(path, line, f"{word} {nxt!r} is not a number")
            if word == "hashsize":
                hashsize = int(nxt)
            else:
                maxelem = int(nxt)
    return family, hashsize, maxelem


def _member(text: str, path: str, line: int) -> model.IpSetMember:
    """One member line: `10.244.1.5 timeout 99 comment "uid"`."""
    stripped = text.strip()
    comment = None
    pos = stripped.find(' comment "')
    if pos >= 0:
        start = pos + len(' comment "')
        end = stripped.find('"', start)  # ipset forbids '"' inside comments
        if end < 0:
            raise ParseError(path, line, "unterminated comment (truncated line?)")
        comment = stripped[start:end]
    elem = stripped.split(None, 1)[0]
    return model.IpSetMember(text=elem, comment=comment, source=model.SourceRef(path, line, text))


# Header lines every ipset version prints (6.x has no "Number of entries"; `-t` no "Members:").
_HEADER_KEYS = ("Type", "Revision", "Header", "Size in memory", "References")


class _ListSet:
    __slots__ = ("fields", "in_members", "line", "members", "name", "text")

    def __init__(self, name: str, line: int, text: str) -> None:
        self.name, self.line, self.text = name, line, text
        self.fields: dict[str, tuple[int, str]] = {}
        self.members: list[model.IpSetMember] = []
        self.in_members = False


def _parse_list(lines: list[str], path: str, *, complete: bool) -> dict[str, model.IpSet]:
    sets: dict[str, model.IpSet] = {}
    cur: _ListSet | None = None

    def finish(s: _ListSet, eof: bool) -> None:
        if "Type" not in s.fields:
            raise ParseError(
                path, s.line, f"set {s.name}: header has no 'Type:' line"
                + (" (truncated capture?)" if eof else "")
            )  # fmt: skip
        set_type = s.fields["Type"][1]
        hdr_line, hdr = s.fields.get("Header", (s.line, ""))
        family, hashsize, maxelem = _header_options(hdr.split(), path, hdr_line)
        declared = None
        if "Number of entries" in s.fields:
            n_line, n_text = s.fields["Number of entries"]
            if not n_text.isdigit():
                raise ParseError(path, n_line, f"'Number of entries: {n_text}' is not a number")
            declared = int(n_text)
        if s.name in sets:
            raise ParseError(path, s.line, f"set {s.name} listed twice")
        sets[s.name] = model.IpSet(
            name=s.name,
            type=set_type,
            family=family,
            maxelem=maxelem,
            hashsize=hashsize,
            declared_entries=declared,
            members=tuple(s.members),
            source=model.SourceRef(path, s.line, s.text),
        )

    any_members = any_count = False
    for idx, line in enumerate(lines):
        lineno = idx + 1
        if line.startswith("Name: "):
            if cur is not None:
                any_members = any_members or cur.in_members
                any_count = any_count or "Number of entries" in cur.fields
                finish(cur, eof=False)
            name = line[6:].strip()
            if not name:
                raise ParseError(path, lineno, "set without a name")
            cur = _ListSet(name, lineno, line)
            continue
        if cur is None:
            if line.strip():
                raise ParseError(path, lineno, f"not ipset list output: {shorten(line)}")
            continue
        if line.startswith("ipset v"):
            # stderr merged into the file: "ipset v7.17: Kernel error received: ..."
            raise ParseError(path, lineno, f"ipset reported an error: {shorten(line)}")
        if cur.in_members:
            if line.strip():
                cur.members.append(_member(line, path, lineno))
            continue
        if not line.strip():
            continue  # blank line after a terse (`-t`) header
        key, sep, value = line.partition(":")
        if not sep:
            raise ParseError(
                path, lineno, f"set {cur.name}: expected 'Key: value', got {shorten(line)}"
            )
        if key == "Members":
            cur.in_members = True
            continue
        if key not in (
            "Type",
            "Revision",
            "Header",
            "Size in memory",
            "References",
            "Number of entries",
        ):
            raise ParseError(path, lineno, f"set {cur.name}: unknown header line {shorten(line)}")
        cur.fields[key] = (lineno, value.strip())

    if cur is not None:
        hint = "re-collect `ipset list`; the capture is truncated"
        if not complete:
            declared = cur.fields.get("Number of entries", (0, "?"))[1]
            reason = f"set {cur.name}: the last line is cut off (no final newline)"
            if cur.in_members:
                reason += f"; {len(cur.members) - 1} complete of {declared} members"
            raise ParseError(path, len(lines), reason, hint=hint)
        finish(cur, eof=True)  # its own errors (bad numbers, duplicate name) are more precise
        missing = [k for k in _HEADER_KEYS if k not in cur.fields]
        if missing:
            raise ParseError(
                path,
                len(lines),
                f"set {cur.name}: header ends before {missing[0]!r}: truncated?",
                hint=hint,
            )
        if any_members and not cur.in_members:
            raise ParseError(
                path,
                len(lines),
                f"set {cur.name}: no 'Members:' line (other sets have one): truncated?",
                hint=hint,
            )
        if any_count and "Number of entries" not in cur.fields:
            raise ParseError(
                path,
                len(lines),
                f"set {cur.name}: no 'Number of entries:' (other sets have one): truncated?",
                hint=hint,
            )
    return sets


def _parse_save(lines: list[str], path: str) -> dict[str, model.IpSet]:
    # name -> (line, text, type, family, hashsize, maxelem, members)
    pending: dict[str, tuple[int, str, str, str | None, int | None, int | None, list]] = {}
    for idx, line in enumerate(lines):
        lineno = idx + 1
        words = line.split()
        if not words:
            continue
        cmd = words[0]
        if cmd == "create":
            if len(words) < 3:
                raise ParseError(path, lineno, f"'create' needs a name and a type: {shorten(line)}")
            name = words[1]
            if name in pending:
                raise ParseError(path, lineno, f"set {name} created twice")
            family, hashsize, maxelem = _header_options(words[3:], path, lineno)
            pending[name] = (lineno, line, words[2], family, hashsize, maxelem, [])
        elif cmd == "add":
            if len(words) < 3:
                raise ParseError(path, lineno, f"'add' needs a set and a member: {shorten(line)}")
            entry = pending.get(words[1])
            if entry is None:
                raise ParseError(
                    path, lineno, f"member added to set {words[1]}, which is not created above"
                )
            rest = line.split(None, 2)[2]
            entry[6].append(_member_from_save(rest, line, path, lineno))
        else:
            raise ParseError(path, lineno, f"not ipset save output: {shorten(line)}")
    return {
        name: model.IpSet(
            name=name,
            type=stype,
            family=family,
            maxelem=maxelem,
            hashsize=hashsize,
            declared_entries=None,
            members=tuple(members),
            source=model.SourceRef(path, lineno, text),
        )
        for name, (lineno, text, stype, family, hashsize, maxelem, members) in pending.items()
    }


def _member_from_save(rest: str, line: str, path: str, lineno: int) -> model.IpSetMember:
    m = _member(rest, path, lineno)
    return model.IpSetMember(
        text=m.text, comment=m.comment, source=model.SourceRef(path, lineno, line)
    )
