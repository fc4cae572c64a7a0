"""Text bound for a terminal: no control sequence from the data ever reaches it.

Bundle contents and node stderr are untrusted: a pod name, an iptables comment or a
command's error message can hold ESC sequences (OSC 0 sets the window title, OSC 8 makes a
hyperlink, CSI moves the cursor and rewrites what the user reads), C1 controls (U+0080 to
U+009F, which many terminals treat as ESC + a letter) or bidirectional overrides (U+202E:
text shown in another order than stored, CVE-2021-42574). `terminal_safe` is applied once
at the boundary - the text renderers' result and every line the CLI echoes - and shows each
such character as a visible escape (`\\x1b`, `\\u202e`); newline and tab are layout and
stay, and so do SGR colour sequences made only of the codes `term.Term.paint` writes (colour
and bold/dim; the renderers colour a terminal's output): at worst, data can recolour text,
never set a title, a hyperlink or the clipboard (OSC), move the cursor or hide text. JSON output
needs nothing: `json.dumps` already writes every control character as a `\\u00XX` escape,
so the exact value survives for machines.
"""

from __future__ import annotations

import re

# An SGR colour sequence (ESC [ n;n m), checked against the codes `term.Term.paint` uses;
# else one unsafe character: C0 except \t and \n, DEL, C1, Unicode bidi controls.
_UNSAFE = re.compile(
    "\x1b\\[([0-9;]{0,16})m|"
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
# Term's styles (term._CODES) and reset: colour and weight only, never conceal/blink.
_OWN_SGR = frozenset({"", "0", "1", "2", "31", "32", "33", "36"})


def _escape(match: re.Match[str]) -> str:
    codes = match.group(1)
    if codes is not None:
        if set(codes.split(";")) <= _OWN_SGR:
            return match.group()  # a colour, as `term.Term.paint` writes them
        return "\\x1b" + match.group()[1:]
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """`text` with every control or bidi character replaced by a visible escape."""
    return _UNSAFE.sub(_escape, text)


def echo(message: str = "", *, err: bool = False, nl: bool = True) -> None:
    """`click.echo` of data-derived text, made `terminal_safe`."""
    import click

    click.echo(terminal_safe(message), err=err, nl=nl)
