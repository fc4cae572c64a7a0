"""Hand-made faults on copies of the example bundles, for tests that need a broken bundle
without a kernel lab (the kernel labs make the real ones)."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed-kind-ambient"


def seed_without_sleep_in_ipset(tmp_path: Path, name: str = "broken") -> Path:
    """The seed example with sleep (10.244.2.4) removed from ambient-worker's capture ipset:
    AMB201 (error) and AMB104 (warning); without a manifest, so the edit is no hash mismatch
    (AMB101, info, says so)."""
    b = tmp_path / name
    shutil.copytree(SEED, b)
    (b / "manifest.json").unlink()
    ipset = b / "nodes" / "ambient-worker" / "host" / "ipset.txt"
    ipset.write_text("".join(ln for ln in ipset.read_text().splitlines(keepends=True)
                             if "10.244.2.4" not in ln))
    return b
