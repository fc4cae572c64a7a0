"""Parse-and-trace benchmark on a worst-case kube-proxy node (not a timed test).

Takes a bundle (default: examples/seed-kind-ambient), copies it, and inflates BOTH nodes'
`iptables-save.txt` with a generated kube-proxy rule set (default 10,000 Services x 15
endpoints = ~630k lines, perf-reliability.md §1.2's worst realistic node): the generated
KUBE-SERVICES entries go *before* the cluster's own, so every Service lookup scans them
all, and the HBONE leg's packet (not a Service address) falls through all of them. Then:

- the whole CLI, cold: `ambientctl trace sleep productpage --bundle COPY -o json` (median
  of N runs, wall clock, including interpreter start-up);
- in process: bundle load + parse (lazy index), first trace, warm trace, peak RSS;
- the example bundle itself, cold CLI (the "well under a second" goal).

    python benchmarks/bench_trace.py [--services 10000 --endpoints 15 --runs 3 --bundle DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import kube_proxy_dump  # noqa: E402


def _split_tables(text: str) -> list[list[str]]:
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in text.splitlines():
        current.append(line)
        if line == "COMMIT":
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def inflate(node_dump: str, generated: str) -> str:
    """Merge the generated kube-proxy nat chains into a node's real `iptables-save`."""
    gen_nat = next(b for b in _split_tables(generated) if "*nat" in b)
    decls = [ln for ln in gen_nat if ln.startswith((":KUBE-SVC-", ":KUBE-SEP-"))]
    svc_rules = [ln for ln in gen_nat if ln.startswith("-A KUBE-SERVICES -d ")]
    chain_rules = [ln for ln in gen_nat if ln.startswith(("-A KUBE-SVC-", "-A KUBE-SEP-"))]
    out: list[str] = []
    for block in _split_tables(node_dump):
        if "*nat" not in block:
            out.extend(block)
            continue
        first_rule = next(i for i, ln in enumerate(block) if ln.startswith("-A "))
        first_svc = next((i for i, ln in enumerate(block) if ln.startswith("-A KUBE-SERVICES")),
                         first_rule)
        out.extend(block[:first_rule])
        out.extend(decls)
        out.extend(block[first_rule:first_svc])
        out.extend(svc_rules)
        out.extend(ln for ln in block[first_svc:] if ln != "COMMIT")
        out.extend(chain_rules)
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def _cli(bundle: Path, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ambientctl", "trace", "sleep", "productpage",
                        "--bundle", str(bundle), "-o", "json"], check=True,
                       stdout=subprocess.DEVNULL, cwd=ROOT)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(ROOT / "examples" / "seed-kind-ambient"))
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--endpoints", type=int, default=15)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    from ambientctl.analyzers.selectors import resolve
    from ambientctl.analyzers.trace import Tracer
    from ambientctl.loading import load_snapshot

    src = Path(args.bundle)
    med, best = _cli(src, args.runs)
    print(f"example bundle, cold CLI trace: median {med*1000:.0f} ms (best {best*1000:.0f} ms)")

    t0 = time.perf_counter()
    generated = kube_proxy_dump.generate(args.services, args.endpoints)
    print(f"generated {args.services} services x {args.endpoints} endpoints: "
          f"{generated.count(chr(10)):,} lines, {len(generated)/1e6:.1f} MB "
          f"in {time.perf_counter()-t0:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "bundle"
        shutil.copytree(src, big)
        (big / "manifest.json").unlink(missing_ok=True)  # hashes no longer match: hand-made
        lines = 0
        for dump in sorted(big.glob("nodes/*/host/iptables-save.txt")):
            text = inflate(dump.read_text(), generated)
            dump.write_text(text)
            lines += text.count("\n")
        print(f"inflated nodes' iptables-save: {lines:,} lines in all")

        t0 = time.perf_counter()
        snap = load_snapshot(str(big))
        t_load = time.perf_counter() - t0
        tracer_t0 = time.perf_counter()
        tracer = Tracer(snap)
        s = resolve(snap, "sleep", role="source")
        d = resolve(snap, "productpage", role="destination")
        trace = tracer.trace(s, d)
        t_first = time.perf_counter() - tracer_t0
        t0 = time.perf_counter()
        again = Tracer(snap).trace(s, d)
        t_warm = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        assert trace.disposition == again.disposition
        print(f"in process: load+index {t_load:.2f} s, first trace {t_first:.2f} s, "
              f"warm trace {t_warm*1000:.0f} ms, peak RSS {rss:.0f} MiB; "
              f"disposition {trace.disposition.value}")
        med, best = _cli(big, args.runs)
        print(f"inflated bundle, cold CLI trace: median {med:.2f} s (best {best:.2f} s)")


if __name__ == "__main__":
    main()
