"""Live-collection benchmarks: concurrency against injected latency, memory for 70 MB.

    python benchmarks/bench_collect.py latency [--targets 100] [--latency 0.2] [--sequential]
    python benchmarks/bench_collect.py memory  [--transport docker|kube|ssh] [--services 10000]
    python benchmarks/bench_collect.py scale   [--nodes 50 500] [--pods 50] [--profile-memory]
                                               [--phases] [--keep-bundle DIR]
                                               [--ztunnel [--whole-dumps]]
                                               [--max-request-line 8192]

`latency`: 100 emulated targets (10 nodes x (host + 9 pods), each a real network
namespace) collected through the docker transport against the Engine API test peer,
which sleeps `--latency` seconds before every exec (the round-trip cost of a remote
exec: ~0.3 s for `docker exec` on Docker Desktop, perf-reliability.md §2.1). Reports the
wall time at the default concurrency (8) against the sequential sum of the per-target
times, and how many exec round trips were made (batching: one per target + one
discovery per node). `--sequential` also measures concurrency 1 for real.

`memory`: a kube-proxy-shaped `iptables-save` of `--services` x 15 endpoints (10,000 ->
~630k lines, ~70 MB, the worst realistic node of perf-reliability.md §1.4) is loaded into
a throwaway netns, then ONE target is collected through a transport into a bundle in a
fresh child process; reports that child's peak RSS (ru_maxrss) above its baseline after
imports, and the wall time.

`scale`: a simulated cluster (`--nodes` nodes x `--pods` app pods, every node an
istio-cni pod answering the discovery and batch scripts in-process with outputs of
realistic size) collected through the Kubernetes exec transport against the API test
peer with `--latency` per exec; reports wall time, exec round trips, API list pages and
the collecting process's peak RSS. The peer's request line is limited to
`--max-request-line` bytes (8192, nginx's default in front of an API server: a node
batch is refused once and cut into groups; 1048576 for an API server reached directly).
`--profile-memory` runs the collection under tracemalloc instead and reports, for the
same run, the traced peak and the 15 source lines holding the most memory when the run
hands its results to the bundle writer (the moment everything a run keeps is alive;
`run_peak_mib`: the traced peak before it) and at the traced peak's end of writing; slower
(tracemalloc costs ~2x), so its wall time is not comparable. `--ztunnel` adds a ztunnel
pod per node whose admin `config_dump` (read through the API's port-forward, answered
in-process) lists every app pod of the cluster as a workload (~0.5 KB each, as upstream)
plus that node's own `workloadState`: the cluster-wide sections every node shares, stored
once (bundle format 2), or per node with `--whole-dumps` (`collect --whole-ztunnel-dumps`).
`--phases` samples the collector's RSS (no tracemalloc, so the figures hold): at the start
and end of planning, the run and the write, the highest RSS between, and pymalloc's arenas
and bytes in use (which tell Python objects held from memory freed but not returned).
`--keep-bundle DIR` copies each bundle to DIR/NODESxPODS (to compare two trees' bundles).

Needs root (network namespaces). Every namespace is created through `ambientlab.netns.Lab`
(registered, removed at exit, even on failure). No Docker engine or cluster is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ambientlab.netns import Lab
from tests.peers.docker_engine import DockerEngine, kind_container
from tests.peers.kube_api import ExecTarget, KubeApi
from tests.peers.netns import NodeView
from tests.peers.sim_cluster import SimNode, SimZtunnel, sim_cluster


def _cluster(nodes: dict[str, list[tuple[str, str]]]) -> dict[str, Any]:
    """Minimal API objects: nodes, and one pod (namespace bench) per pod netns."""
    pods, node_items = [], []
    for n, (node, pod_list) in enumerate(sorted(nodes.items())):
        node_items.append(
            {
                "metadata": {"name": node},
                "spec": {"podCIDR": f"10.200.{n}.0/24"},
                "status": {"addresses": [{"type": "InternalIP", "address": f"172.30.0.{n + 2}"}]},
            }
        )
        for name, ip in pod_list:
            pods.append(
                {
                    "metadata": {"name": name, "namespace": "bench", "uid": f"uid-{name}"},
                    "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app"}]},
                    "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
                }
            )
    def lst(items):
        return {"apiVersion": "v1", "kind": "List", "items": items}
    return {
        "nodes": lst(node_items),
        "pods": lst(pods),
        "services": lst([]),
        "namespaces": lst([{"metadata": {"name": "bench"}}]),
        "endpointslices": lst([]),
    }


def latency_bench(args: argparse.Namespace) -> dict[str, Any]:
    from ambientctl.collectors.live import LiveOptions, collect_live

    per_node = max(1, args.targets // args.nodes)
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="bench-collect-") as work:
        nodes: dict[str, list[tuple[str, str]]] = {}
        views: dict[str, NodeView] = {}
        for n in range(args.nodes):
            node = f"bench-node-{n}"
            host = lab.add_netns(f"n{n}")
            pods = []
            for p in range(per_node - 1):
                ns = lab.add_netns(f"n{n}p{p}")
                ip = f"10.200.{n}.{p + 2}"
                ns.ip("addr", "add", f"{ip}/32", "dev", "lo")
                pods.append((ns.name, f"app-{n}-{p}", ip))
            nodes[node] = [(name, ip) for _, name, ip in pods]
            views[node] = NodeView(node, host.name, [ns for ns, _, _ in pods], work)
        containers = [kind_container("bench", node, v.prefix()) for node, v in views.items()]
        with (
            DockerEngine(Path(work) / "docker.sock", containers, latency=args.latency) as engine,
            KubeApi(_cluster(nodes), enrich=False) as api,
        ):
            kubeconfig = api.kubeconfig(Path(work) / "kubeconfig", context="kind-bench")
            results: dict[str, Any] = {"targets": args.nodes * per_node, "latency_s": args.latency}
            runs = [("default", 8)] + ([("sequential", 1)] if args.sequential else [])
            for label, concurrency in runs:
                engine.exec_count = 0
                opts = LiveOptions(
                    kind="bench",
                    docker_host=engine.base_url,
                    kubeconfig=str(kubeconfig),
                    concurrency=concurrency,
                )
                t0 = time.monotonic()
                written = collect_live(opts, str(Path(work) / f"bundle-{label}"))
                wall = time.monotonic() - t0
                m = written.manifest
                results[label] = {
                    "concurrency": concurrency,
                    "wall_s": round(wall, 2),
                    "exec_round_trips": engine.exec_count,
                    "entries": len(m["entries"]),
                    "failed": len(written.failed),
                }
            # Sequential sum: every round trip costs at least the injected latency plus the
            # work behind it; measured as (round trips x latency) + the commands' own time.
            d = results["default"]
            own = sum(e["duration_ms"] for e in m["entries"] if e["target"] != "cluster") / 1000
            d["sequential_sum_s"] = round(d["exec_round_trips"] * args.latency + own, 2)
            d["speedup"] = round(d["sequential_sum_s"] / d["wall_s"], 1)
            commands = sum(1 for e in m["entries"] if e["target"] != "cluster")
            versions = 5 * args.nodes  # tool-version commands, one round trip each unbatched
            d["unbatched_round_trips"] = commands + versions + args.nodes
            d["unbatched_sequential_sum_s"] = round(
                d["unbatched_round_trips"] * args.latency + own, 1
            )
            return results


# --------------------------------------------------------------------------- memory


def _hwm_kib() -> int:
    """Peak resident set of THIS process image (VmHWM, proc(5)). Unlike ru_maxrss it is
    per address space, so a child does not inherit its parent's peak across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child_collect(transport: str, netns: str, workdir: str) -> None:
    """In a fresh process: collect one node through `transport`, print peak RSS."""
    import docker  # noqa: F401  (count the imports in the baseline)
    import kubernetes
    import kubernetes.stream  # noqa: F401

    from ambientctl.collectors import live
    from ambientctl.collectors.live import LiveOptions, collect_live

    work = Path(workdir)
    view = NodeView("big-node", netns, [], workdir)
    base = _hwm_kib()
    t0 = time.monotonic()
    out = str(work / f"bundle-{transport}.tar.gz")
    if transport == "docker":
        with (
            DockerEngine(
                work / "docker.sock", [kind_container("big", "big-node", view.prefix())]
            ) as engine,
            KubeApi(_cluster({"big-node": []}), enrich=False) as api,
        ):
            kc = api.kubeconfig(work / "kubeconfig", context="kind-big")
            written = collect_live(
                LiveOptions(kind="big", docker_host=engine.base_url, kubeconfig=str(kc)), out
            )
    elif transport == "kube":
        cluster = _cluster({"big-node": []})
        cluster["pods"]["items"].append(
            {
                "metadata": {
                    "name": "istio-cni-node-big",
                    "namespace": "istio-system",
                    "labels": {"k8s-app": "istio-cni-node"},
                },
                "spec": {
                    "nodeName": "big-node",
                    "hostNetwork": True,
                    "containers": [{"name": "install-cni"}],
                },
                "status": {
                    "phase": "Running",
                    "podIP": "172.30.0.2",
                    "podIPs": [{"ip": "172.30.0.2"}],
                },
            }
        )
        with KubeApi(
            cluster,
            {("istio-system", "istio-cni-node-big"): ExecTarget(view.prefix())},
            enrich=False,
        ) as api:
            kc = api.kubeconfig(work / "kubeconfig")
            written = collect_live(
                LiveOptions(kubeconfig=str(kc), cni_netns_dir="/var/run/netns"), out
            )
    else:
        from tests.peers.sshd import Sshd

        with Sshd(work / "sshd", netns=netns, prefix=view.prefix()) as sshd:
            written = collect_live(
                LiveOptions(
                    ssh=f"big-node=root@127.0.0.1:{sshd.port}",
                    ssh_key=str(sshd.client_key),
                    ssh_known_hosts=str(work / "kh"),
                    ssh_accept_new=True,
                    kubeconfig="/nonexistent",
                ),
                out,
            )
    wall = time.monotonic() - t0
    peak = _hwm_kib()
    entry = next(e for e in written.manifest["entries"] if e["spec"] == "iptables-save.txt")
    slowest = max(
        (e for e in written.manifest["entries"] if e["target"] != "cluster"),
        key=lambda e: e["duration_ms"],
    )
    print(
        json.dumps(
            {
                "transport": transport,
                "wall_s": round(wall, 2),
                "iptables_save_bytes": entry["size"],
                "status": entry["status"],
                "iptables_save_s": entry["duration_ms"] / 1000,
                "slowest_command": [slowest["spec"], slowest["duration_ms"] / 1000],
                "baseline_rss_mib": round(base / 1024, 1),
                "peak_rss_mib": round(peak / 1024, 1),
                "peak_above_baseline_mib": round((peak - base) / 1024, 1),
                "bundle_bytes": os.path.getsize(out),
                "live_module": live.__name__,
            }
        )
    )


def memory_bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    from benchmarks.kube_proxy_dump import generate

    results = []
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="bench-mem-") as work:
        ns = lab.add_netns("big")
        dump = Path(work) / "dump.txt"
        dump.write_text(generate(args.services, 15))
        t0 = time.monotonic()
        with open(dump, "rb") as fh:
            subprocess.run(
                ["ip", "netns", "exec", ns.name, "iptables-restore"], stdin=fh, check=True
            )
        restore = time.monotonic() - t0
        dump.unlink()
        for transport in args.transport:
            res = subprocess.run(
                [sys.executable, __file__, "_child", transport, ns.name, work],
                capture_output=True,
                text=True,
                check=False,
                cwd=str(REPO),
            )
            if res.returncode != 0:
                raise SystemExit(res.stderr)
            doc = json.loads(res.stdout.strip().splitlines()[-1])
            doc["restore_s"] = round(restore, 1)
            results.append(doc)
    return results


# --------------------------------------------------------------------------- scale


_MEASURE = (
    "import resource, subprocess, sys, time; t = time.monotonic(); "
    "r = subprocess.run(sys.argv[1:]); "
    "print(time.monotonic() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.exit(r.returncode)"
)


_PROFILE = r"""
import json, os, runpy, sys, tracemalloc
tracemalloc.start(4)
from ambientctl.collectors import runner

report, real = {}, runner.write_bundle


def top(snap, n=15):
    stats = snap.statistics("lineno")[:n]
    return [[f"{s.traceback[0].filename.rsplit('/', 2)[-1]}:{s.traceback[0].lineno}",
             round(s.size / 2**20, 1), s.count] for s in stats]


def traced(*args, **kwargs):
    now, run_peak = tracemalloc.get_traced_memory()
    report["at_write_mib"] = round(now / 2**20, 1)
    report["run_peak_mib"] = round(run_peak / 2**20, 1)  # the collection's own peak
    report["top_at_write"] = top(tracemalloc.take_snapshot())
    tracemalloc.reset_peak()
    try:
        return real(*args, **kwargs)
    finally:
        report["write_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        report["top_after_write"] = top(tracemalloc.take_snapshot())
        with open(os.environ["AMBIENTCTL_PROFILE_OUT"], "w") as fh:
            json.dump(report, fh)


runner.write_bundle = traced
sys.argv = ["ambientctl", *sys.argv[1:]]
runpy.run_module("ambientctl", run_name="__main__")
"""


_PHASES = r"""
import json, os, runpy, sys, threading, time
from ambientctl.collectors import live, runner

marks, peak = [], [0]


def rss():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def sample():
    while True:
        peak[0] = max(peak[0], rss())
        time.sleep(0.05)


def pymalloc():
    # pymalloc arenas held (1 MiB each in 3.11), MiB of blocks in use in them
    import re, tempfile
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode()
    arenas = int(re.search(r"# arenas allocated current\s*=\s*([\d,]+)", text)[1].replace(",", ""))
    used = int(re.search(r"# bytes in allocated blocks\s*=\s*([\d,]+)", text)[1].replace(",", ""))
    return arenas, round(used / 2**20, 1)  # 1 MiB arenas (3.11)


def mark(what):
    now = rss()
    marks.append([what, now, max(peak[0], now), *pymalloc()])
    peak[0] = 0
    with open(os.environ["AMBIENTCTL_PROFILE_OUT"], "w") as fh:
        json.dump(marks, fh)


def wrap(mod, name):
    real = getattr(mod, name)

    def wrapped(*a, **k):
        mark(f"before {name}")
        try:
            return real(*a, **k)
        finally:
            mark(f"after {name}")
    setattr(mod, name, wrapped)


wrap(live, "plan_live")
wrap(runner.Runner, "run")
wrap(runner, "write_bundle")
threading.Thread(target=sample, daemon=True).start()
sys.argv = ["ambientctl", *sys.argv[1:]]
try:
    runpy.run_module("ambientctl", run_name="__main__")
finally:
    mark("exit")
"""


def scale_bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Kubernetes-exec collection of simulated clusters of each `--nodes` size."""
    from ambientctl.collectors.batch import batch_for
    from ambientctl.collectors.live import RoutedNetns

    per_host = args.host_kib * 1024 // len(batch_for(RoutedNetns(kind="node")))
    host = b"-A KUBE-SVC-XXXXXXXXXXXXXXXX -m statistic --mode random -j KUBE-SEP-X\n" * (
        per_host // 68
    )
    pod = b"-A ISTIO_OUTPUT -j ACCEPT\n" * max(1, args.pod_bytes // 26)
    rows = []
    for nodes in args.nodes:
        docs, netns = sim_cluster(nodes, args.pods, ztunnel=args.ztunnel)
        targets = {("istio-system", f"istio-cni-node-{n}"): ExecTarget(
            [], respond=SimNode(n, netns[f"sim-node-{n}"], host, pod)) for n in range(nodes)}
        if args.ztunnel:
            zt = SimZtunnel(nodes, args.pods)
            for n in range(nodes):
                targets[("istio-system", f"ztunnel-{n}")] = ExecTarget(
                    [], frozenset(), forward=lambda _port, _req, n=n, zt=zt: zt.answer(n))
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as work, \
                KubeApi(docs, targets, latency=args.latency, enrich=False,
                        max_request_line=args.max_request_line) as api:
            conf = api.kubeconfig(Path(work) / "kubeconfig", context="peer")
            out = Path(work) / "bundle"
            profile = Path(work) / "profile.json"
            cli = (["-c", _PROFILE] if args.profile_memory else ["-c", _PHASES] if args.phases
                   else ["-m", "ambientctl"])
            res = subprocess.run(
                [sys.executable, "-c", _MEASURE, sys.executable, *cli, "collect",
                 "--kubeconfig", str(conf), "--context", "peer", "--concurrency",
                 str(args.concurrency), "-q", "-o", str(out),
                 *(["--whole-ztunnel-dumps"] if args.whole_dumps else [])],
                cwd=REPO, capture_output=True, text=True,
                env={**os.environ, "PYTHONPATH": str(REPO), "AMBIENTCTL_PROFILE_OUT": str(profile)},
            )
            if not (out / "manifest.json").exists():
                raise SystemExit(f"collection of {nodes} nodes failed: {res.stderr.strip()[-2000:]}")
            if args.keep_bundle:
                # kept for comparing two trees' bundles (the run's directory is deleted)
                shutil.copytree(out, Path(args.keep_bundle) / f"{nodes}x{args.pods}")
            wall, peak_kib = res.stdout.strip().splitlines()[-1].split()
            manifest = json.loads((out / "manifest.json").read_text())
            size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
            dumps = [f for f in out.rglob("*.json") if f.parent.name == "ztunnel-shared"
                     or f.relative_to(out).as_posix().endswith("/ztunnel/config_dump.json")]
            rows.append({
                "nodes": nodes, "pods_per_node": args.pods, "latency_s": args.latency,
                "concurrency": args.concurrency, "exit": res.returncode,
                "wall_s": round(float(wall), 1),
                "max_request_line": args.max_request_line,
                "exec_round_trips": api.exec_count,
                "exec_round_trips_per_node": round(api.exec_count / nodes, 2),
                "api_list_pages": sum(api.list_pages.values()),
                "targets": len(manifest["targets"]),
                "entries_not_ok": sum(1 for e in manifest["entries"] if e["status"] != "ok"),
                # which ones and why: a count alone does not say whether the cluster, the
                # load or the collector failed them
                "not_ok_sample": [
                    {k: e.get(k) for k in ("path", "status", "exit_code", "note",
                                            "duration_ms") if e.get(k) is not None}
                    | {"stderr_tail": (e.get("stderr") or "")[-300:]}
                    for e in manifest["entries"] if e["status"] != "ok"][:8],
                "bundle_mib": round(size / 2**20, 1),
                "ztunnel_dumps": ("whole" if args.whole_dumps else "split") if args.ztunnel
                else None,
                "ztunnel_mib": round(sum(f.stat().st_size for f in dumps) / 2**20, 1),
                "ztunnel_files": len(dumps),
                "peak_rss_mib": round(int(peak_kib) / 1024, 1),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            })
            if args.profile_memory:
                rows[-1]["tracemalloc"] = json.loads(profile.read_text())
            if args.phases:  # [phase, RSS MiB then, highest RSS MiB since the previous mark]
                rows[-1]["rss_phases"] = json.loads(profile.read_text())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--targets", type=int, default=100)
    lat.add_argument("--nodes", type=int, default=10)
    lat.add_argument("--latency", type=float, default=0.2)
    lat.add_argument("--sequential", action="store_true", help="also run at concurrency 1")
    mem = sub.add_parser("memory")
    mem.add_argument("--services", type=int, default=10_000)
    mem.add_argument("--transport", action="append", choices=["docker", "kube", "ssh"])
    sc = sub.add_parser("scale")
    sc.add_argument("--nodes", type=int, nargs="+", default=[50, 500])
    sc.add_argument("--pods", type=int, default=50, help="app pods per node")
    sc.add_argument("--latency", type=float, default=0.3, help="seconds per exec round trip")
    sc.add_argument("--concurrency", type=int, default=8)
    sc.add_argument("--max-request-line", type=int, default=8192,
                    help="the API front's request-line limit (8192: nginx's default, where "
                    "a node batch is cut into groups; 1048576: a real API server reached "
                    "directly, one batch per node)")
    sc.add_argument("--host-kib", type=int, default=600,
                    help="KiB a node's own netns prints, all commands together (~5k kube-proxy rules)")
    sc.add_argument("--pod-bytes", type=int, default=300, help="bytes per pod command")
    sc.add_argument("--ztunnel", action="store_true",
                    help="a ztunnel per node whose config_dump lists every app pod")
    sc.add_argument("--whole-dumps", action="store_true",
                    help="collect with --whole-ztunnel-dumps (every dump stored whole)")
    sc.add_argument("--keep-bundle", metavar="DIR",
                    help="copy each bundle to DIR/NODESxPODS before the run's directory goes")
    sc.add_argument("--phases", action="store_true",
                    help="sample the collector's RSS: at each phase's start and end, and its "
                    "highest between (planning, the run, writing)")
    sc.add_argument("--profile-memory", action="store_true",
                    help="run under tracemalloc: what holds memory when the bundle is written")
    child = sub.add_parser("_child")
    child.add_argument("transport")
    child.add_argument("netns")
    child.add_argument("workdir")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: builds network namespaces")
    if args.cmd == "latency":
        print(json.dumps(latency_bench(args), indent=2))
    elif args.cmd == "scale":
        print(json.dumps(scale_bench(args), indent=2))
    elif args.cmd == "memory":
        args.transport = args.transport or ["docker", "kube", "ssh"]
        print(json.dumps(memory_bench(args), indent=2))
    else:
        _child_collect(args.transport, args.netns, args.workdir)


if __name__ == "__main__":
    main()
