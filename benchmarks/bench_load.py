"""What loading costs a trace (issue 12): `load_snapshot` + touching one pod pair's namespaces.

For each bundle given (directories or .tar.gz, e.g. from benchmarks/scale_bundle.py), a fresh
child interpreter per run measures, in process:

- import: `import ambientctl.loading` (the loader and its parsers);
- load: `load_snapshot(bundle)`;
- touch: every slot of the namespaces a sleep -> productpage trace stands on (both pods'
  netns, both nodes' host netns) and those nodes' ztunnel config_dumps;
- peak RSS of the child (ru_maxrss) and how many namespaces were parsed.

`--before DIR` runs the same in a second checkout (e.g. the lead's main, with the eager
loader) so both columns come from the same run on the same machine load.

    python benchmarks/bench_load.py /tmp/scale-2 /tmp/scale-2.tar.gz ... [--runs 3]
        [--before /work/main]

Not a timed test: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
try:
    from ambientctl.loading import load_snapshot
except ImportError:  # a checkout from before the loader left bundle/
    from ambientctl.bundle.load import load_snapshot
t1 = time.perf_counter()
snap = load_snapshot(sys.argv[2])
t2 = time.perf_counter()
touched = 0
for want in ("sleep", "productpage"):
    pod = next(p for p in snap.cluster.pods if p.name.startswith(want + "-") and p.node)
    for ns in (snap.pod_netns(pod.ref), snap.netns(f"{pod.node}/host")):
        if ns is not None:
            ns.problems  # every slot of that namespace
            touched += 1
    snap.ztunnel_configs.get(pod.node)
t3 = time.perf_counter()
parsed = getattr(snap, "parsed_namespaces", None)
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "touch": t3 - t2,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "touched": touched,
                  "parsed": len(parsed()) if parsed else sum(1 for _ in snap.namespaces())}))
"""


def measure(tree: Path, bundle: str, runs: int) -> dict[str, float]:
    got = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _CHILD, str(tree), bundle],
                             capture_output=True, text=True, check=True, timeout=3600)
        got.append(json.loads(out.stdout))
    return {k: statistics.median(g[k] for g in got) for k in got[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--before", type=Path, help="another checkout to compare with")
    args = ap.parse_args()
    trees = [("after", ROOT)] + ([("before", args.before)] if args.before else [])
    print("| bundle | tree | import s | load s | touch s | load+touch s | peak RSS MiB "
          "| namespaces parsed |")
    print("|---|---|---|---|---|---|---|---|")
    for bundle in args.bundles:
        for label, tree in trees:
            m = measure(tree, bundle, args.runs)
            print(f"| {Path(bundle).name} | {label} | {m['import']:.2f} | {m['load']:.2f} | "
                  f"{m['touch']:.2f} | {m['load'] + m['touch']:.2f} | {m['rss_mib']:.0f} | "
                  f"{m['parsed']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
