"""Text bound for a terminal: no control sequence from the data ever reaches it.

Bundle contents and node stderr are untrusted: a pod name, an iptables comment or a
command's error message can hold ESC sequences (OSC 0 sets the window title, OSC 8 makes a
hyperlink, CSI moves the cursor and rewrites what the user reads), C1 controls (U+0080 to
U+009F, which many terminals treat as ESC + a letter) or bidirectional overrides (U+202E:
text shown in another order than stored, CVE-2021-42574). `terminal_safe` is applied once
at the boundary - the text renderers' result and every line the CLI echoes - and shows each
such character as a visible escape (`\\x1b`, `\\u202e`); newline and tab are layout and
stay. JSON output needs nothing: `json.dumps` already writes every control character as a
`\\u00XX` escape, so the exact value survives for machines.
"""

from __future__ import annotations

import re

# C0 except \t and \n, DEL, C1; Unicode bidi embeddings/overrides/isolates and marks.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """`text` with every control or bidi character replaced by a visible escape."""
    return _UNSAFE.sub(_escape, text)


def echo(message: str = "", *, err: bool = False, nl: bool = True) -> None:
    """`click.echo` of data-derived text, made `terminal_safe`."""
    import click

    click.echo(terminal_safe(message), err=err, nl=nl)
