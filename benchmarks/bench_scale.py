"""Cluster-scale benchmark (issue 12): every figure in one table, the floor measured in the same run.

For each size (default 2, 10, 50, 200 nodes) it generates an in-pod bundle
(benchmarks/scale_bundle.py: ~20 pods and ~5k kube-proxy lines per node), then times, as
whole CLI processes (interpreter start-up included; wall clock and the peak RSS of the
child and its own children, the larger of wait4's figure and their VmRSS summed):

- floor: read every file of the bundle (bytes, nothing parsed), in a child process;
- trace: `ambientctl trace sleep productpage -o json`;
- doctor: `ambientctl doctor -o json`;
- verify: `ambientctl bundle verify`;
- redact: `ambientctl bundle redact` (skipped with --no-redact);
- trace on the .tar.gz of the same bundle (with --tar).

Then the 630k-rule node: the 2-node bundle with one node's iptables-save inflated to
10,000 services x 15 endpoints, `trace` on it against `iptables-restore --test` of the same
dump inside a throwaway network namespace (created and deleted here; never the root
netns; skipped when not root). And native nftables text translation per rule.

    python benchmarks/bench_scale.py [--quick] [--nodes 2,10,50,200] [--runs 3] [--tar]
                                     [--no-redact] [--skip-big]
    python benchmarks/bench_scale.py --trace-only --nodes 2,200 --runs 5 [--keep DIR]

The doctor column runs with its default scheduling (one process, node by node;
AMBIENTCTL_DOCTOR_WORKERS=auto or a number in the environment checks nodes in forked
workers, and the memory figure is then the process tree's, VmRSS summed). See
benchmarks/README.md.

Not a timed test: the figures depend on the machine and its load; the ratios are what the
goals are stated in.
"""

from __future__ import annotations

import argparse
import os
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
import scale_bundle  # noqa: E402

_FLOOR = ("import os,sys\n"
          "n=0\n"
          "for d,_,fs in os.walk(sys.argv[1]):\n"
          "    for f in fs:\n"
          "        with open(os.path.join(d,f),'rb') as fh: n+=len(fh.read())\n")


# A small launcher times the command and reports its peak RSS: a child forked straight from
# this (large) process would report this process's RSS at fork time as its own peak (Linux
# carries the pre-exec high-water mark into ru_maxrss), inflating small figures. It also
# samples the VmRSS of the command's whole process tree every 20 ms (doctor's worker pool:
# wait4 reports the largest single process, not the parent and its workers together) and
# reports the larger of the two.
_LAUNCH = ("import os,subprocess,sys,time\n"
           "def tree(pid):\n"
           "    todo,seen=[pid],[]\n"
           "    while todo:\n"
           "        p=todo.pop();seen.append(p)\n"
           "        try:\n"
           "            for t in os.listdir(f'/proc/{p}/task'):\n"
           "                with open(f'/proc/{p}/task/{t}/children') as f:\n"
           "                    todo+=map(int,f.read().split())\n"
           "        except OSError: pass\n"
           "    return seen\n"
           "def rss(p):\n"
           "    try:\n"
           "        with open(f'/proc/{p}/status') as f:\n"
           "            for line in f:\n"
           "                if line.startswith('VmRSS:'): return int(line.split()[1])\n"
           "    except OSError: pass\n"
           "    return 0\n"
           "t0=time.perf_counter()\n"
           "fin=open(sys.argv[1],'rb')\n"
           "p=subprocess.Popen(sys.argv[2:],stdin=fin,stdout=subprocess.DEVNULL,"
           "stderr=subprocess.DEVNULL)\n"
           "peak=0\n"
           "while True:\n"
           "    pid,st,ru=os.wait4(p.pid,os.WNOHANG)\n"
           "    if pid: break\n"
           "    peak=max(peak,sum(rss(x) for x in tree(p.pid)))\n"
           "    time.sleep(0.02)\n"
           "print(time.perf_counter()-t0,max(ru.ru_maxrss,peak),"
           "os.waitstatus_to_exitcode(st))\n")


def run(argv: list[str], stdin: Path | None = None) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) of the command and its children together, exit code."""
    out = subprocess.run([sys.executable, "-c", _LAUNCH, str(stdin or os.devnull), *argv],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1]) / 1024, int(out[2])


def median_of(argv: list[str], runs: int, stdin: Path | None = None) -> tuple[float, float]:
    got = [run(argv, stdin) for _ in range(runs)]
    return statistics.median(g[0] for g in got), max(g[1] for g in got)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ambientctl", *args]


def bundle_figures(bundle: Path, runs: int, tar: bool, redact: bool) -> dict[str, tuple]:
    files = [f for f in bundle.rglob("*") if f.is_file()]
    out: dict[str, tuple] = {"files": (len(files),),
                             "bytes": (sum(f.stat().st_size for f in files),)}
    out["floor"] = median_of([sys.executable, "-c", _FLOOR, str(bundle)], runs)
    out["trace"] = median_of(cli("trace", "sleep", "productpage", "--bundle", str(bundle),
                                 "-o", "json"), runs)
    out["doctor"] = median_of(cli("doctor", "--bundle", str(bundle), "-o", "json"), runs)
    out["verify"] = median_of(cli("bundle", "verify", str(bundle)), runs)
    if redact:
        with tempfile.TemporaryDirectory() as tmp:
            out["redact"] = median_of(cli("bundle", "redact", str(bundle),
                                          str(Path(tmp) / "r")), 1)
    if tar:
        with tempfile.TemporaryDirectory() as tmp:
            tgz = scale_bundle.to_tar(bundle, Path(tmp) / (bundle.name + ".tar.gz"))
            out["trace .tar.gz"] = median_of(cli("trace", "sleep", "productpage", "--bundle",
                                                 str(tgz), "-o", "json"), runs)
    return out


def _fmt(fig: tuple) -> str:
    return f"{fig[0]:.2f} s / {fig[1]:.0f} MiB" if len(fig) == 2 else f"{fig[0]:,}"


def table(rows: dict[int, dict[str, tuple]]) -> None:
    cols = ["files", "bytes", "floor", "trace", "doctor", "verify", "redact", "trace .tar.gz"]
    cols = [c for c in cols if any(c in r for r in rows.values())]
    print("| nodes | " + " | ".join(cols) + " | doctor / floor |")
    print("|---" * (len(cols) + 2) + "|")
    for n, r in rows.items():
        print(f"| {n} | " + " | ".join(_fmt(r[c]) if c in r else "-" for c in cols)
              + f" | {r['doctor'][0] / r['floor'][0]:.1f}x |")
    sizes = sorted(rows)
    if len(sizes) >= 2:
        lo, hi = rows[sizes[0]], rows[sizes[-1]]
        print(f"\ntrace {sizes[-1]} nodes / {sizes[0]} nodes: "
              f"{hi['trace'][0] / lo['trace'][0]:.2f}x (goal <= 1.5x), peak "
              f"{hi['trace'][1]:.0f} MiB (goal < 150)")
        print(f"doctor {sizes[-1]} nodes / floor: {hi['doctor'][0] / hi['floor'][0]:.1f}x "
              f"(goal <= 5x), peak {hi['doctor'][1]:.0f} MiB (goal < 400)")
        for cmd in ("verify", "redact"):
            if cmd in hi:
                print(f"{cmd} peak {lo[cmd][1]:.0f} MiB at {sizes[0]} nodes, {hi[cmd][1]:.0f} "
                      f"MiB at {sizes[-1]} (goal: independent of cluster size)")


def big_node(tmp: Path, runs: int) -> None:
    """The 630k-rule node: trace vs iptables-restore --test on the same dump."""
    from bench_trace import inflate

    bundle = scale_bundle.generate(tmp / "big", 2, pods=0)
    dump = bundle / "nodes" / "ambient-worker" / "host" / "iptables-save.txt"
    (bundle / "manifest.json").unlink()  # the dump no longer matches: a hand-made bundle
    gen = kube_proxy_dump.generate(10_000, 15)
    base = (scale_bundle.TEMPLATE / "nodes" / "ambient-worker" / "host"
            / "iptables-save.txt").read_text()
    dump.write_text(inflate(base, gen))
    size = dump.stat().st_size
    lines = dump.read_text().count("\n")
    floor = median_of([sys.executable, "-c", _FLOOR, str(dump.parent)], runs)
    trace = median_of(cli("trace", "sleep", "productpage", "--bundle", str(bundle), "-o",
                          "json"), runs)
    print(f"\n630k-rule node: {lines:,} lines, {size / 2**20:.0f} MiB dump")
    print(f"  read the node's files (floor): {_fmt(floor)}")
    print(f"  trace (CLI): {_fmt(trace)}; peak RSS / dump size {trace[1] / (size / 2**20):.2f} "
          "(goal <= 2)")
    if os.geteuid() != 0 or shutil.which("iptables-restore") is None:
        print("  iptables-restore --test: skipped (needs root and iptables)")
        return
    # The throwaway netns needs the ipsets the rules name, or restore stops at the first
    # `--match-set` and the figure times a failure (bench_trace.iptables_restore_test).
    from bench_trace import iptables_restore_test

    restore = iptables_restore_test(dump)
    assert restore is not None
    print(f"  iptables-restore --test (throwaway netns): {_fmt(restore)}")
    print(f"  trace / iptables-restore --test: {trace[0] / restore[0]:.3f}x (goal <= 0.05x)")


def nft_text(n_rules: int = 20_000) -> None:
    """Native nftables text translation, per rule."""
    from ambientctl.analyzers.parse import nft as pn

    lines = ["table ip kube-proxy {", "\tchain services {"]
    for i in range(n_rules):
        lines.append(f"\t\tip daddr 10.96.{i // 250}.{i % 250 + 1} tcp dport 80 "
                     f"goto service-{i:05d}-ns/svc:http")
    lines += ["\t}"]
    for i in range(min(n_rules, 2000)):
        lines += [f"\tchain service-{i:05d}-ns/svc:http {{",
                  "\t\tip saddr != 10.128.0.0/12 jump mark-for-masquerade", "\t}"]
    lines.append("}")
    text = "\n".join(lines) + "\n"
    rules = n_rules + min(n_rules, 2000)
    t0 = time.perf_counter()
    rs = pn.parse_nft_text(text, "bench/nft-ruleset.txt")
    for t in rs.tables:
        for c in t.chains.values():
            c.rules  # noqa: B018 - tokenise all, as a full translation would
    dt = time.perf_counter() - t0
    print(f"\nnft text: {rules:,} rules translated in {dt:.2f} s = {dt / rules * 1000:.3f} ms/rule "
          "(was ~0.4 ms/rule)")


def trace_only(sizes: list[int], runs: int, keep: Path | None) -> None:
    """Issue 12's trace goal alone: `trace` on a directory and on its .tar.gz at each size,
    median of `runs` whole-CLI runs and the worst peak RSS, then the largest/smallest ratio.
    `keep` reuses (or writes) the generated bundles there: generating 200 nodes takes minutes."""
    print("| nodes | files | trace dir | trace .tar.gz |\n|---|---|---|---|")
    got: dict[int, dict[str, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-trace-") as tmp:
        base = keep or Path(tmp)
        for n in sizes:
            b = base / f"b{n}"
            if not (b / "manifest.json").exists():
                scale_bundle.generate(b, n)
            tgz = base / f"b{n}.tar.gz"
            if not tgz.exists():
                scale_bundle.to_tar(b, tgz)
            argv = ("trace", "sleep", "productpage", "-o", "json", "--bundle")
            got[n] = {"dir": median_of(cli(*argv, str(b)), runs),
                      "tar": median_of(cli(*argv, str(tgz)), runs)}
            files = sum(1 for f in b.rglob("*") if f.is_file())
            print(f"| {n} | {files:,} | {_fmt(got[n]['dir'])} | {_fmt(got[n]['tar'])} |")
    lo, hi = got[min(got)], got[max(got)]
    for kind in ("dir", "tar"):
        print(f"trace {kind}: {max(got)} nodes / {min(got)} nodes = "
              f"{hi[kind][0] / lo[kind][0]:.2f}x (goal <= 1.5x), peak {hi[kind][1]:.0f} MiB "
              "(goal < 150)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="2,10,50,200")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tar", action="store_true")
    ap.add_argument("--no-redact", action="store_true")
    ap.add_argument("--skip-big", action="store_true", help="skip the 630k-rule node")
    ap.add_argument("--trace-only", action="store_true",
                    help="only trace, directory and .tar.gz (median of --runs, e.g. 5)")
    ap.add_argument("--keep", type=Path, help="with --trace-only: keep/reuse bundles here")
    ap.add_argument("--quick", action="store_true",
                    help="a few minutes: 2 and 10 nodes, one run each, no 630k-rule node")
    args = ap.parse_args()
    if args.quick:
        args.nodes, args.runs, args.skip_big = "2,10", 1, True
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.trace_only:
        trace_only([int(x) for x in args.nodes.split(",")], args.runs, args.keep)
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
        return
    rows: dict[int, dict[str, tuple]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for n in (int(x) for x in args.nodes.split(",")):
            b = scale_bundle.generate(Path(tmp) / f"b{n}", n)
            rows[n] = bundle_figures(b, args.runs, args.tar, not args.no_redact)
            shutil.rmtree(b)
            print(f"  {n} nodes done", file=sys.stderr)
        table(rows)
        if not args.skip_big:
            big_node(Path(tmp), args.runs)
    nft_text()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
