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
    python benchmarks/bench_trace.py --big-node [--runs 3]

`--big-node`: the 630k-rule node of issue 12 alone — the 2-node generated bundle with one
node's dump inflated; read + index + trace in a fresh interpreter (and the whole CLI) against
`iptables-restore --test` of the same dump in a throwaway network namespace, peak RSS
(wait4) and tracemalloc peak against the dump's size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
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


# A launcher that times a command and reports its own peak RSS (wait4): a child forked
# straight from this large process would inherit its high-water mark.
_LAUNCH = ("import os,subprocess,sys,time\n"
           "t0=time.perf_counter()\n"
           "fin=open(sys.argv[1],'rb')\n"
           "p=subprocess.Popen(sys.argv[2:],stdin=fin,stdout=subprocess.DEVNULL)\n"
           "_,st,ru=os.wait4(p.pid,0)\n"
           "print(time.perf_counter()-t0,ru.ru_maxrss,os.waitstatus_to_exitcode(st))\n")


def timed(argv: list[str], stdin: Path | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one command; fails if it fails."""
    out = subprocess.run([sys.executable, "-c", _LAUNCH, str(stdin or "/dev/null"), *argv],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    if int(out[2]) != 0:
        raise SystemExit(f"{argv[:4]}... exited {out[2]}")
    return float(out[0]), int(out[1]) / 1024


def iptables_restore_test(dump: Path) -> tuple[float, float] | None:
    """`iptables-restore --test` of `dump` in a throwaway network namespace (unique name,
    deleted afterwards; never the root netns), with the ipsets the rules reference created
    there first (without them restore stops at the first `--match-set`, timing a failure).
    None when not root or iptables is missing."""
    if os.geteuid() != 0 or shutil.which("iptables-restore") is None:
        return None
    name = f"ambbench-{uuid.uuid4().hex[:8]}"
    sets = sorted(set(re.findall(r"--match-set (\S+) ", dump.read_text())))
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for s in sets:
            subprocess.run(["ip", "netns", "exec", name, "ipset", "create", s, "hash:ip"],
                           check=True)
        return timed(["ip", "netns", "exec", name, "iptables-restore", "--test"], stdin=dump)
    finally:
        for s in sets:
            subprocess.run(["ip", "netns", "exec", name, "ipset", "destroy", s], check=False)
        subprocess.run(["ip", "netns", "del", name], check=False)


# Parse + trace of one node in a fresh interpreter: read the dump as the bundle reader does,
# index it, and walk the example's path through the node's netfilter.
_IN_PROCESS = """
import json, resource, sys, time, tracemalloc
sys.path.insert(0, sys.argv[1])
from ambientctl.analyzers.selectors import resolve
from ambientctl.analyzers.trace import Tracer
from ambientctl.bundle.load import load_snapshot
from ambientctl.analyzers.parse.iptables import parse_iptables_save
from ambientctl.bundle.reader import open_bundle
bundle, rel = sys.argv[2], sys.argv[3]
if len(sys.argv) > 4:
    tracemalloc.start()
t0 = time.perf_counter()
text = open_bundle(bundle).read_text(rel)
t1 = time.perf_counter()
rs = parse_iptables_save(text, rel)
t2 = time.perf_counter()
chains = sum(len(t.chains) for t in rs.tables)
del rs, text
snap = load_snapshot(bundle)
t3 = time.perf_counter()
src = resolve(snap, "sleep", role="source")
dst = resolve(snap, "productpage", role="destination")
tr = Tracer(snap).trace(src, dst)
t4 = time.perf_counter()
built = sum(getattr(t.chains, "built", 0) for ns in snap.namespaces() for t in ns.tables())
peak = tracemalloc.get_traced_memory()[1] if tracemalloc.is_tracing() else 0
print(json.dumps({"read": t1 - t0, "index": t2 - t1, "load": t3 - t2, "trace": t4 - t3,
                  "chains": chains, "built": built, "disposition": tr.disposition.value,
                  "tracemalloc_peak": peak,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def big_node(runs: int, services: int, endpoints: int) -> None:
    """The 630k-rule node (issue 12): parse + trace vs `iptables-restore --test`, memory."""
    import scale_bundle

    with tempfile.TemporaryDirectory(prefix="bench-bignode-") as tmp:
        bundle = scale_bundle.generate(Path(tmp) / "big", 2, pods=0)
        (bundle / "manifest.json").unlink()  # the dump no longer matches: a hand-made bundle
        rel = "nodes/ambient-worker/host/iptables-save.txt"
        base = (scale_bundle.TEMPLATE / rel).read_text()
        (bundle / rel).write_text(base)
        small = [timed(_cli_argv(bundle)) for _ in range(runs)]
        (bundle / rel).write_text(inflate(base, kube_proxy_dump.generate(services, endpoints)))
        dump = bundle / rel
        size = dump.stat().st_size / 2**20
        print(f"\n630k-rule node: {dump.read_text().count(chr(10)):,} lines, {size:.1f} MiB dump"
              f" (load average {os.getloadavg()[0]:.1f})")
        restore = iptables_restore_test(dump)
        cli = [timed(_cli_argv(bundle)) for _ in range(runs)]
        inproc = [json.loads(subprocess.run(
            [sys.executable, "-c", _IN_PROCESS, str(ROOT), str(bundle), rel],
            check=True, capture_output=True, text=True).stdout) for _ in range(runs)]
        traced = json.loads(subprocess.run(
            [sys.executable, "-c", _IN_PROCESS, str(ROOT), str(bundle), rel, "tracemalloc"],
            check=True, capture_output=True, text=True).stdout)
        med = {k: statistics.median(r[k] for r in inproc) for k in ("read", "index", "trace")}
        parse_trace = med["read"] + med["index"] + med["trace"]
        cli_t = statistics.median(c[0] for c in cli)
        cli_rss = max(c[1] for c in cli)
        small_rss = max(c[1] for c in small)
        print(f"  in process (median of {runs}): read+decode {med['read']:.3f} s, index "
              f"{med['index']:.3f} s, trace {med['trace']:.3f} s; {inproc[0]['chains']:,} "
              f"chains, {inproc[0]['built']} built by the trace "
              f"({inproc[0]['disposition']})")
        print(f"  CLI trace: {cli_t:.2f} s, peak RSS {cli_rss:.0f} MiB "
              f"(same bundle without the kube-proxy rules: "
              f"{statistics.median(c[0] for c in small):.2f} s, {small_rss:.0f} MiB)")
        print(f"  peak RSS / dump: {cli_rss / size:.2f}x; added by the dump "
              f"{(cli_rss - small_rss) / size:.2f}x; tracemalloc peak "
              f"{traced['tracemalloc_peak'] / 2**20 / size:.2f}x (goal <= 2x)")
        if restore is None:
            print("  iptables-restore --test: skipped (needs root and iptables)")
            return
        print(f"  iptables-restore --test (throwaway netns): {restore[0]:.2f} s, "
              f"{restore[1]:.0f} MiB")
        print(f"  parse + trace / restore: {parse_trace / restore[0]:.3f}x; whole CLI / "
              f"restore: {cli_t / restore[0]:.3f}x (goal <= 0.05x)")


def _cli_argv(bundle: Path) -> list[str]:
    return [sys.executable, "-m", "ambientctl", "trace", "sleep", "productpage",
            "--bundle", str(bundle), "-o", "json"]


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
    ap.add_argument("--big-node", action="store_true",
                    help="only the 630k-rule node: parse + trace vs iptables-restore --test")
    args = ap.parse_args()
    if args.big_node:
        big_node(args.runs, args.services, args.endpoints)
        return

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
