"""Build the seed lab and collect `examples/seed-kind-ambient/` with `ambientctl collect --local`.

    sudo python examples/make_seed_example.py                        # the committed example
    sudo python examples/make_seed_example.py --fault istioout-down -o /tmp/broken
                                                                     # a broken variant

The example is the seed's 2022 kind cluster (node-level ambient, see examples/README.md),
healthy: every file in it is what iptables-save, ipset, ip, nft, ss and sysctl printed
inside the lab's network namespaces (`ambientlab.seed.SeedLab`), and cluster/*.json is
`SeedLab.write_cluster`. Never edit the directory by hand: regenerate it. The lab is torn
down afterwards, even on failure.

The lab id is fixed (`ambseedex`) so that the namespace names that tools print (e.g.
`link-netns ambseedex-kind` in ip-addr) do not change from one regeneration to the next;
two concurrent runs of this script therefore refuse to start (the id is taken).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ambientlab.faults import FAULTS  # noqa: E402
from ambientlab.seed import SeedLab  # noqa: E402

DEFAULT_OUT = ROOT / "examples" / "seed-kind-ambient"
LAB_ID = "ambseedex"


def make(out: Path, fault: str | None = None) -> Path:
    """Build the lab (optionally break it), collect it into `out` (replaced), tear down."""
    staging_parent = Path(tempfile.mkdtemp(prefix=".seed-example-", dir=out.parent))
    staging = staging_parent / out.name
    try:
        with SeedLab(lab_id=LAB_ID) as lab:
            if fault:
                lab.inject(fault)
            res = lab.collect(str(staging), "-q")
        if res.returncode != 0:
            raise SystemExit(f"collect failed ({res.returncode}):\n{res.stderr}")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging_parent, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT,
                        help=f"bundle directory to (re)write [default: {DEFAULT_OUT}]")
    parser.add_argument("--fault", choices=sorted(FAULTS), help="inject this fault first")
    args = parser.parse_args(argv)
    print(make(args.out.resolve(), args.fault))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
