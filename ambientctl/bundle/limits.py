"""How much an untrusted bundle may make ambientctl read: the caps and their overrides.

Why caps at all: bundles come from customers and compress extremely well (a 6 MB
`.tar.gz` can hold a 2 GiB file). Without a cap, opening one costs whatever memory the
attacker chose. The defaults sit far above any real capture (perf-reliability.md: the
largest realistic dump, a 630k-rule node's `iptables-save`, is ~70 MB; a 200-node bundle
is ~364 MB), so they only ever stop hostile or broken input. docs/limits-and-safety.md is
the user-facing description; this module is the one place the numbers live.

Overrides: environment `AMBIENTCTL_MAX_MEMBER_SIZE`, `AMBIENTCTL_MAX_BUNDLE_SIZE`,
`AMBIENTCTL_MAX_MEMBERS`, or the global options `--max-member-size` / `--max-bundle-size`
(which set the same variables). Sizes accept a plain byte count or K/M/G/T suffixes
(binary: 1K = 1024).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ambientctl.errors import UsageError

MIB = 1 << 20
GIB = 1 << 30

DEFAULT_MAX_MEMBER = 512 * MIB
DEFAULT_MAX_BUNDLE = 4 * GIB
DEFAULT_MAX_MEMBERS = 500_000
# Nesting deeper than this in a JSON file is refused before decoding: real captures
# (kubectl lists, config_dump, nft -j) nest < 20 levels; Python's decoder recurses and
# overflows the stack near ~1000 (a RecursionError is a crash, not a data error).
MAX_JSON_DEPTH = 200

ENV_MEMBER = "AMBIENTCTL_MAX_MEMBER_SIZE"
ENV_BUNDLE = "AMBIENTCTL_MAX_BUNDLE_SIZE"
ENV_MEMBERS = "AMBIENTCTL_MAX_MEMBERS"

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, what: str) -> int:
    """`"512M"` -> 536870912; a usage error naming `what` for anything else."""
    m = _SIZE.match(text)
    if not m:
        raise UsageError(f"{what}: {text!r} is not a size",
                         hint="give bytes, or a number with K, M, G or T (e.g. 512M)")
    value = int(m.group(1)) * _UNITS[m.group(2).upper()]
    if value <= 0:
        raise UsageError(f"{what}: must be positive, got {text!r}")
    return value


def human(n: int) -> str:
    """A size as a user typed it back: 536870912 -> "512 MiB"."""
    for unit, div in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """Caps applied while reading one bundle (see the module docstring)."""

    max_member: int = DEFAULT_MAX_MEMBER  # bytes of one file
    max_bundle: int = DEFAULT_MAX_BUNDLE  # uncompressed bytes of the whole archive / tree
    max_members: int = DEFAULT_MAX_MEMBERS  # entries in an archive or directory tree

    @classmethod
    def from_env(cls) -> ReadLimits:
        """The defaults, overridden by the environment (what the CLI options set)."""
        env = os.environ
        return cls(
            max_member=parse_size(env[ENV_MEMBER], ENV_MEMBER) if env.get(ENV_MEMBER)
            else DEFAULT_MAX_MEMBER,
            max_bundle=parse_size(env[ENV_BUNDLE], ENV_BUNDLE) if env.get(ENV_BUNDLE)
            else DEFAULT_MAX_BUNDLE,
            max_members=parse_size(env[ENV_MEMBERS], ENV_MEMBERS) if env.get(ENV_MEMBERS)
            else DEFAULT_MAX_MEMBERS,
        )


OVERRIDE_HINT = (f"if the bundle is trusted, raise the limit: --max-member-size / "
                 f"--max-bundle-size (or {ENV_MEMBER} / {ENV_BUNDLE})")
