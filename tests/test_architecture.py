"""The package layering, pinned: which package may import which (issue 9 §2).

Collectors do I/O only, analyzers are pure functions over the model, renderers see only
results, the bundle package reads and writes bundles. Each rule is checked with `ast` over
every module of the package, function-level (lazy) imports included: a lazy import is
still a dependency, only a cheaper one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "ambientctl"

# package -> packages it must never import (prefixes of dotted module names)
FORBIDDEN = {
    "analyzers": ("ambientctl.bundle", "ambientctl.collectors", "ambientctl.cli"),
    "render": ("ambientctl.bundle", "ambientctl.collectors"),
    "collectors": ("ambientctl.analyzers",),
    "bundle": ("ambientctl.analyzers",),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, anywhere in it, as absolute dotted names (with line)."""
    return imports_of_source(path.read_text(), _module_name(path), path.name == "__init__.py")


def imports_of_source(src: str, module: str, is_pkg: bool) -> list[tuple[int, str]]:
    """The imports of `src` read as module `module` (relative imports resolve from it)."""
    here = module.split(".")
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_pkg else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            # `from ambientctl import bundle` imports a package, not just a name
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return out


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((PKG / package).rglob("*.py")):
        for line, mod in imported_modules(path):
            for banned in FORBIDDEN[package]:
                if mod == banned or mod.startswith(banned + "."):
                    found.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_never_imports_the_layers_it_must_not_know(package: str) -> None:
    assert violations(package) == []


def test_import_scanner_sees_function_level_and_relative_imports() -> None:
    # The rule above can only fail if the scanner finds lazy and relative imports.
    src = ("def f():\n    from ambientctl.bundle import reader\n"
           "from ..collectors import specs\nimport ambientctl.cli.common\n")
    mods = {m for _, m in imports_of_source(src, "ambientctl.analyzers.probe", False)}
    assert {"ambientctl.bundle.reader", "ambientctl.collectors.specs",
            "ambientctl.cli.common"} <= mods
