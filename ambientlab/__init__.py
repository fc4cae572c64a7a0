"""ambientlab: the seed's 2022 ambient cluster rebuilt from network namespaces.

Test and demo infrastructure (not shipped in the ambientctl wheel): `SeedLab` builds two
emulated kind nodes with the real node-level ambient rules, lets tests probe where a TCP
connection lands, inject faults, and collect a bundle with `ambientctl collect --local`.
Needs root; touches only namespaces it creates (see `ambientlab.netns`).
"""

from __future__ import annotations

__all__ = ["SeedLab"]


def __getattr__(name: str) -> object:
    # Lazy: `python -m ambientlab.emulate connect` must not import the builder.
    if name == "SeedLab":
        from ambientlab.seed import SeedLab

        return SeedLab
    raise AttributeError(name)
