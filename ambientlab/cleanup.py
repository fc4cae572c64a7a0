"""Remove what crashed lab runs left behind: `python -m ambientlab.cleanup [--force]`.

Only labs recorded in `/run/ambientlab/<lab id>.json` are considered, and only the
namespaces that registry lists (all named `<lab id>-...`, lab ids start with `amb`).
A lab whose owner process still runs is skipped unless `--force` is given, so running this
while another test session has a lab up is safe.
"""

from __future__ import annotations

import argparse
import json
import sys

from ambientlab.netns import REGISTRY_DIR, owner_alive, remove_registered


def cleanup(*, force: bool = False, dry_run: bool = False) -> list[str]:
    """Clean every dead lab's leftovers; returns the lines it printed."""
    report: list[str] = []
    if not REGISTRY_DIR.is_dir():
        return report
    for entry in sorted(REGISTRY_DIR.glob("amb*.json")):
        try:
            doc = json.loads(entry.read_text())
        except (OSError, ValueError):
            report.append(f"{entry}: unreadable, left alone")
            continue
        if owner_alive(doc) and not force:
            report.append(f"{doc.get('id')}: owner pid {doc.get('owner_pid')} still running, skipped")
            continue
        if dry_run:
            report.append(f"{doc.get('id')}: would remove {', '.join(doc.get('netns', []))}")
            continue
        removed = remove_registered(doc)
        entry.unlink(missing_ok=True)
        report.append(f"{doc.get('id')}: removed {len(removed)} netns")
    return report


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m ambientlab.cleanup", description=__doc__)
    parser.add_argument("--force", action="store_true", help="also remove labs whose owner runs")
    parser.add_argument("-n", "--dry-run", action="store_true")
    args = parser.parse_args(argv)
    for line in cleanup(force=args.force, dry_run=args.dry_run):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
