"""Peak memory of `collect --local` when one command prints a huge output.

    python benchmarks/bench_output_cap.py [--mib 600] [--max-output 256] [--repo PATH]

One catalogue command (`ipset list`) is replaced, through a PATH shim, by one that prints
`--mib` MiB of zeros; the other commands run for real. The collection runs in a fresh,
private network namespace (`unshare --net`: nothing is read from or changed in the
machine's own) as a child of a measuring parent whose RUSAGE_CHILDREN peak RSS is the
collector's own. Prints the peak RSS (MiB), the wall time and the exit code; `--repo`
measures another checkout (e.g. `git worktree add /tmp/old <commit>`) for a before/after.

Needs root (unshare --net).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save",
         "nft", "ip", "ss", "sysctl", "uname", "nsenter")
MEASURE = (
    "import resource, subprocess, sys, time; t = time.monotonic(); "
    "r = subprocess.run(sys.argv[1:], capture_output=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
    "round(time.monotonic() - t, 2), r.returncode)"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=600)
    ap.add_argument("--max-output", type=int, default=None, help="MiB (default: the CLI's)")
    ap.add_argument("--repo", default=str(REPO))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-output-cap-") as tmp:
        shim = Path(tmp) / "bin"
        shim.mkdir()
        for tool in TOOLS:
            real = shutil.which(tool)
            if real:
                (shim / tool).symlink_to(real)
        head = shutil.which("head")
        (shim / "ipset").write_text(f"#!/bin/sh\nexec {head} -c {args.mib * 1024 * 1024} /dev/zero\n")
        (shim / "ipset").chmod(0o755)
        cap = ["--max-output", str(args.max_output)] if args.max_output else []
        res = subprocess.run(
            [sys.executable, "-c", MEASURE, shutil.which("unshare") or "unshare", "--net",
             sys.executable, "-m", "ambientctl", "collect", "--local", "--node-name", "n1",
             *cap, "-q", "-o", str(Path(tmp) / "bundle")],
            cwd=args.repo, env={**os.environ, "PATH": str(shim), "PYTHONPATH": args.repo},
            capture_output=True, text=True, check=False,
        )
        peak_kib, secs, code = res.stdout.split()[-3:]
        print(f"output {args.mib} MiB, cap {args.max_output or 'default'}: "
              f"peak RSS {int(peak_kib) / 1024:.0f} MiB, {secs} s, exit {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
