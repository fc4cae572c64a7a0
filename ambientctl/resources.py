"""Files that ship with ambientctl: the example bundles and the docs (checks catalogue).

In a checkout (and an editable install) they are the repository's own `examples/` and
`docs/`; a wheel (`pip install .`, `pipx install`) carries copies under the package's
`_data/` folder, put there at build time by `setup.py`. One lookup serves both, so
`ambientctl examples` and `ambientctl doctor explain` work wherever ambientctl runs.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_DATA = _PACKAGE / "_data"
_REPO = _PACKAGE.parent

EXAMPLE_SUFFIX = "-kind-ambient"


def data_dir(name: str) -> Path | None:
    """`examples` or `docs`: the installed copy, else the checkout's, else None."""
    for base in (_DATA, _REPO):
        candidate = base / name
        if candidate.is_dir():
            return candidate
    return None


def examples() -> dict[str, Path]:
    """Example bundles by name (`seed-kind-ambient`, ...)."""
    root = data_dir("examples")
    if root is None:
        return {}
    return {p.name: p for p in sorted(root.iterdir())
            if p.is_dir() and p.name.endswith(EXAMPLE_SUFFIX) and (p / "manifest.json").is_file()}


def doc_text(name: str) -> str | None:
    """A page of the docs (`checks.md`), or None when this installation has none."""
    root = data_dir("docs")
    if root is None or not (root / name).is_file():
        return None
    return (root / name).read_text(encoding="utf-8")


EXAMPLE_SCHEME = "example:"


def bundle_argument(text: str) -> str:
    """`--bundle example:NAME` (NAME may omit `-kind-ambient`) names a bundled example;
    anything else is a path and is returned as it is."""
    if not text.startswith(EXAMPLE_SCHEME):
        return text
    from ambientctl.errors import UsageError

    name = text[len(EXAMPLE_SCHEME):]
    found = examples()
    for candidate in (name, name + EXAMPLE_SUFFIX):
        if candidate in found:
            return str(found[candidate])
    raise UsageError(f"--bundle {text}: no such example",
                     hint="available: " + (", ".join(EXAMPLE_SCHEME + n for n in found)
                                           or "none in this installation"))
