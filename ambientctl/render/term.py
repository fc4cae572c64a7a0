"""Terminal manners for text output: colour only on a terminal (and never under NO_COLOR),
and wrapping at word boundaries to the terminal's width, with a hanging indent, so an
80-column terminal never cuts a word or a rule in two.

Piped output (scripts, `grep`, golden tests) is neither coloured nor wrapped.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from dataclasses import dataclass

_CODES = {"green": "32", "red": "31", "yellow": "33", "bold": "1", "dim": "2", "cyan": "36"}


@dataclass(frozen=True)
class Term:
    """How to print: `width` None means do not wrap; `colour` False means plain text."""

    width: int | None = None
    colour: bool = False

    @classmethod
    def detect(cls, stream: object = None) -> Term:
        """From the output stream: a TTY gets its width and colour (NO_COLOR wins)."""
        out = stream if stream is not None else sys.stdout
        tty = bool(getattr(out, "isatty", lambda: False)())
        if not tty:
            return cls()
        colour = "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        return cls(width=shutil.get_terminal_size((100, 24)).columns, colour=colour)

    def paint(self, text: str, *styles: str) -> str:
        """`text` in ANSI styles when colour is on."""
        if not self.colour or not styles:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def fit(self, line: str, hang: int = 4) -> str:
        """Wrap one line to the width at spaces; continuation lines indented by `hang`
        more than the line's own indent. Long words (paths) are never broken."""
        if self.width is None or len(line) <= self.width:
            return line
        indent = len(line) - len(line.lstrip(" "))
        return "\n".join(textwrap.wrap(line.lstrip(" "), width=self.width,
                                       initial_indent=" " * indent,
                                       subsequent_indent=" " * (indent + hang),
                                       break_long_words=False, break_on_hyphens=False))

    def fit_all(self, text: str) -> str:
        """`fit` every line of `text`."""
        if self.width is None:
            return text
        return "\n".join(self.fit(ln) for ln in text.split("\n"))
