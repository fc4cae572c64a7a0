"""Build a `Snapshot` from a bundle's files: pure, given a way to read them.

Each raw file is parsed by its parser. A file that is absent leaves its slot `None`; a
file that fails to parse leaves it `None` and records a `Problem` naming the file and
line; the rest of the bundle is still used. Entries the manifest marks as failed (the
command did not run on the node) become problems too, with the node's own stderr.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ambientctl.analyzers.parse._common import load_json
from ambientctl.analyzers.parse.ztunnel import parse_config_dump
from ambientctl.bundle.layout import CLUSTER_FILES, MESH_FILES, split_netns_dir
from ambientctl.errors import ParseError
from ambientctl.model import (
    Cluster,
    IpSet,
    MeshObject,
    NetNamespace,
    NodeState,
    PodRef,
    Problem,
    Ruleset,
    Snapshot,
    ZtunnelConfig,
)
from ambientctl.raw import OPTIONAL_ABSENT

_XT_SKIPPED = re.compile(r"table (ip6?) (\S+) is managed by iptables-nft")


@dataclass(frozen=True)
class BundleView:
    """What the snapshot builder needs from a bundle: its file list and a reader."""

    location: str
    paths: tuple[str, ...]
    read_text: Callable[[str], str]
    manifest: Mapping[str, object] | None = None
    manifest_problems: tuple[str, ...] = ()  # damage the reader found (and neutralised)


def _parse(problems: list[Problem], path: str, fn: Callable[..., object]) -> object | None:
    # `fn` is called with no arguments; `...` because the callers' lambdas bind their loop
    # variables as defaults (ruff B023), and mypy cannot infer those against `Callable[[], _]`.
    try:
        return fn()
    except ParseError as exc:
        problems.append(Problem(exc.path, exc.line, exc.reason))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError,
            OverflowError) as exc:  # defensive: a parser bug must not take the bundle down
        problems.append(Problem(path, None, f"could not be parsed ({type(exc).__name__}: {exc})"))
    return None


def manifest_list(manifest: Mapping[str, object], key: str) -> list[object]:
    """The manifest's list under `key`; anything else (absent, damaged) reads as empty."""
    value = manifest.get(key)
    return value if isinstance(value, list) else []


def _failed_entries(manifest: Mapping[str, object] | None) -> dict[str, str]:
    """Planned commands that did not produce a file: destination path -> why.

    A failed entry has `path: null` (nothing stored); its destination is the target's
    directory plus the spec's file name.
    """
    out: dict[str, str] = {}
    if not manifest:
        return out
    dirs = {str(t.get("id")): str(t.get("dir")) for t in manifest_list(manifest, "targets")
            if isinstance(t, dict) and t.get("dir")}
    for entry in manifest_list(manifest, "entries"):
        if not isinstance(entry, dict):
            continue
        status = entry.get("status")
        dest = entry.get("planned_path") or entry.get("path")
        if not dest and entry.get("target") in dirs and entry.get("spec"):
            dest = f"{dirs[str(entry['target'])]}/{entry['spec']}"
        if status == "skipped" and str(entry.get("note") or "").startswith(OPTIONAL_ABSENT):
            continue  # an optional tool the node lacks: nothing was expected there
        if status and status != "ok" and dest:
            stderr = str(entry.get("stderr") or "").strip().splitlines()
            detail = f": {stderr[-1]}" if stderr else ""
            out[str(dest)] = f"{status} on the node (exit {entry.get('exit_code')}){detail}"
    return out


def build_snapshot(view: BundleView) -> Snapshot:
    """Parse every file of the bundle into a `Snapshot`."""
    from ambientctl.analyzers.parse import cluster as pc

    problems: list[Problem] = []
    if view.manifest is None:
        problems.append(Problem("manifest.json", None,
                                "no manifest.json: a hand-assembled bundle; files read by name, "
                                "hashes not checked", "warning"))
    problems.extend(Problem("manifest.json", None, msg) for msg in view.manifest_problems)
    failed = _failed_entries(view.manifest)
    paths = set(view.paths)

    def cluster_file(kind: str, fn: Callable[[str, str], tuple]) -> tuple:
        rel = CLUSTER_FILES[kind]
        if rel not in paths:
            if kind != "endpointslices":
                problems.append(Problem(rel, None, "missing from the bundle", "warning"))
            return ()
        got = _parse(problems, rel, lambda: fn(view.read_text(rel), rel))
        return got if isinstance(got, tuple) else ()

    mesh: list[MeshObject] = []
    mesh_kinds = set()
    for kind, rel in MESH_FILES.items():
        if rel in paths:
            got = _parse(problems, rel, lambda k=kind, r=rel: pc.parse_mesh_objects(
                view.read_text(r), r, k))
            if isinstance(got, tuple):
                mesh += got
                mesh_kinds.add(kind)
    cluster = Cluster(
        pods=cluster_file("pods", pc.parse_pods),
        services=cluster_file("services", pc.parse_services),
        namespaces=cluster_file("namespaces", pc.parse_namespaces),
        nodes=cluster_file("nodes", pc.parse_nodes),
        endpoint_slices=cluster_file("endpointslices", pc.parse_endpointslices),
        mesh_objects=tuple(mesh),
        mesh_kinds=frozenset(mesh_kinds),
    )

    groups: dict[tuple[str, str | None, str | None], set[str]] = {}
    for rel in list(paths) + list(failed):
        split = split_netns_dir(rel)
        if split is None:
            continue
        node, ns_name, pod, fname = split
        groups.setdefault((node, ns_name, pod), set())
        if rel in paths:
            groups[(node, ns_name, pod)].add(fname)

    nodes: dict[str, dict[str, object]] = {}
    for (node, ns_name, pod), files in sorted(groups.items(), key=lambda kv: str(kv[0])):
        ns = build_netns(view, node, ns_name, pod, files, failed)
        slot = nodes.setdefault(node, {"host": None, "pods": {}})
        if pod is None:
            slot["host"] = ns
        else:
            slot["pods"][PodRef(ns_name or "", pod)] = ns  # type: ignore[index]

    dumps: dict[str, object] = {}
    zconfigs: dict[str, ZtunnelConfig] = {}
    for rel in view.paths:
        parts = rel.split("/")
        if len(parts) == 4 and parts[0] == "nodes" and parts[2] == "ztunnel" \
                and parts[3] == "config_dump.json":
            text = view.read_text(rel)
            try:
                dumps[parts[1]] = load_json(text, rel, "ztunnel config_dump")
            except ParseError:
                pass  # parse_config_dump says why, once
            # Every generation's layout, read into one shape; an unreadable dump is a
            # problem of the bundle (stated by trace and doctor), never an empty mesh.
            zc = _parse(problems, rel, lambda t=text, r=rel, n=parts[1]: parse_config_dump(t, r, n))
            if zc is not None:
                zconfigs[parts[1]] = zc  # type: ignore[assignment]

    return Snapshot(
        source=view.location,
        cluster=cluster,
        nodes={name: NodeState(name, s["host"], s["pods"])  # type: ignore[arg-type]
               for name, s in sorted(nodes.items())},
        problems=tuple(problems),
        manifest=view.manifest,
        config_dumps=dumps,
        ztunnel_configs=zconfigs,
    )


def build_netns(view: BundleView, node: str, ns_name: str | None, pod: str | None,
                files: Iterable[str], failed: Mapping[str, str]) -> NetNamespace:
    """Parse the files of one network-namespace directory."""
    from ambientctl.analyzers.parse import host as ph
    from ambientctl.analyzers.parse import iproute as pr
    from ambientctl.analyzers.parse import ipset as ps
    from ambientctl.analyzers.parse import iptables as pt

    files = set(files)
    d = f"nodes/{node}/host" if pod is None else f"nodes/{node}/pods/{ns_name}/{pod}"
    problems: list[Problem] = []
    for failed_rel, why in sorted(failed.items()):
        if failed_rel.startswith(d + "/") and failed_rel.rsplit("/", 1)[1] not in files:
            problems.append(Problem(failed_rel, None, f"not collected: {why}"))

    def rel(name: str) -> str:
        return f"{d}/{name}"

    def text(name: str) -> str:
        return view.read_text(rel(name))

    def first(*names: str) -> str | None:
        return next((n for n in names if n in files), None)

    def first_parsed(names: tuple[str, ...], fn: Callable[[str, str], object]) -> object | None:
        # Alternatives of one command (text, JSON): the first that parses wins; a broken
        # one is still reported.
        for name in names:
            if name in files:
                got = _parse(problems, rel(name), lambda n=name: fn(text(n), rel(n)))
                if got is not None:
                    return got
        return None

    # ---- links
    links = first_parsed(("ip-addr.txt", "ip-addr.json"), pr.parse_ip_addr)
    # ---- routes and rules (v4 and v6 files merged). Text first: evidence is then the
    # line `ip` printed (both are collected; JSON is the fallback).
    got4 = first_parsed(("ip-route.txt", "ip-route.json"),
                        lambda t, r: pr.parse_ip_route(t, r, family=4))
    got6 = first_parsed(("ip6-route.txt", "ip6-route.json"),
                        lambda t, r: pr.parse_ip_route(t, r, family=6))
    # iproute2 >= 6 prints IPv6 routes in `ip route show table all` too: keep one of each.
    routes: list = []
    seen_routes: set[tuple] = set()
    for route in [*(got4 or ()), *(got6 or ())]:  # type: ignore[misc]
        key = (route.family, route.table, route.type, route.dst, route.gateway, route.dev,
               route.metric)
        if key not in seen_routes:
            seen_routes.add(key)
            routes.append(route)
    routes_ok = got4 is not None
    got4 = first_parsed(("ip-rule.txt", "ip-rule.json"),
                        lambda t, r: pr.parse_ip_rule(t, r, family=4))
    got6 = first_parsed(("ip6-rule.txt", "ip6-rule.json"),
                        lambda t, r: pr.parse_ip_rule(t, r, family=6))
    rules: list = [*(got4 or ()), *(got6 or ())]  # type: ignore[misc]
    rules_ok = got4 is not None
    # ---- netfilter
    rulesets: list[Ruleset] = []
    nf_seen = False
    for name, backend in (("iptables-save.txt", None), ("ip6tables-save.txt", None),
                          ("iptables-legacy-save.txt", "iptables-legacy"),
                          ("ip6tables-legacy-save.txt", "iptables-legacy")):
        if name in files:
            nf_seen = True
            got = _parse(problems, rel(name),
                         lambda n=name, b=backend: pt.parse_iptables_save(text(n), rel(n),
                                                                          backend=b))
            if isinstance(got, Ruleset):
                rulesets.append(got)
    ipsets: dict[str, IpSet] | None = None
    xt_unread: list[str] = []
    registrations: dict | None = None
    nft_name = first("nft-ruleset.json", "nft-ruleset.txt")
    if nft_name is not None:
        from ambientctl.analyzers.parse import nft as pn

        nf_seen = True
        fn = pn.parse_nft_json if nft_name.endswith(".json") else pn.parse_nft_text
        got = _parse(problems, rel(nft_name), lambda: fn(text(nft_name), rel(nft_name)))
        if isinstance(got, Ruleset):
            rulesets.append(got)
            # Tables written by iptables-nft are read through iptables-save (their matches are
            # opaque `xt` expressions in nft's listing). Without that dump they would vanish
            # and the namespace look unfiltered: its netfilter is then unknown, said once
            # here, so that trace stops with insufficient-info and doctor skips, alike.
            for w in got.warnings:
                m = _XT_SKIPPED.match(w)
                if m is None:
                    continue
                save = "ip6tables-save.txt" if m.group(1) == "ip6" else "iptables-save.txt"
                if save not in files:
                    xt_unread.append(f"table {m.group(1)} {m.group(2)}")
            if xt_unread:
                problems.append(Problem(
                    rel(nft_name), None,
                    f"{', '.join(xt_unread)} written by iptables-nft, and no iptables-save in "
                    "the bundle to read them with: this namespace's netfilter rules are not "
                    "modelled"))
        sets = _parse(problems, rel(nft_name), lambda: pn.nft_sets(text(nft_name),
                                                                   rel(nft_name)))
        if isinstance(sets, dict) and sets:
            ipsets = dict(sets)
        if nft_name.endswith(".json"):
            from ambientctl.analyzers.parse import nft_hooks

            regs = _parse(problems, rel(nft_name),
                          lambda: nft_hooks.parse_registrations(text(nft_name), rel(nft_name)))
            registrations = regs if isinstance(regs, dict) else None
    if "ipset.txt" in files:
        got = _parse(problems, rel("ipset.txt"),
                     lambda: ps.parse_ipset(text("ipset.txt"), rel("ipset.txt")))
        if isinstance(got, dict):
            ipsets = {**(ipsets or {}), **got}
            for s in got.values():
                if s.declared_entries is not None and s.declared_entries != len(s.members):
                    problems.append(Problem(
                        s.source.path, s.source.line,
                        f"ipset {s.name} declares {s.declared_entries} entries but lists "
                        f"{len(s.members)}: the output looks truncated", "warning"))
    elif ipsets is None and nf_seen:
        ipsets = None
    listeners = None
    if "ss-listen.txt" in files:
        listeners = _parse(problems, rel("ss-listen.txt"),
                           lambda: ph.parse_ss_listen(text("ss-listen.txt"), rel("ss-listen.txt")))
    if listeners is not None and "ss-listen-udp.txt" in files:
        udp = _parse(problems, rel("ss-listen-udp.txt"),
                     lambda: ph.parse_ss_listen(text("ss-listen-udp.txt"), rel("ss-listen-udp.txt"),
                                                proto="udp"))
        listeners = (*listeners, *udp) if udp is not None else listeners  # type: ignore[misc]
    sysctls = None
    if "sysctl.txt" in files:
        sysctls = _parse(problems, rel("sysctl.txt"),
                         lambda: ph.parse_sysctl(text("sysctl.txt"), rel("sysctl.txt")))
    ipvs = None
    if "ipvsadm.txt" in files:
        from ambientctl.analyzers.parse.ipvs import parse_ipvsadm

        got_ipvs = _parse(problems, rel("ipvsadm.txt"),
                          lambda: parse_ipvsadm(text("ipvsadm.txt"), rel("ipvsadm.txt")))
        ipvs = got_ipvs if isinstance(got_ipvs, tuple) else None
    neighbors = first_parsed(("ip-neigh.txt", "ip-neigh.json"), pr.parse_ip_neigh)
    failed_nf = any(p.path.endswith(("iptables-save.txt", "ip6tables-save.txt",
                                     "nft-ruleset.json", "nft-ruleset.txt"))
                    and p.severity == "error" for p in problems)
    return NetNamespace(
        id=f"{node}/host" if pod is None else f"{node}/pod/{ns_name}/{pod}",
        node=node,
        pod=None if pod is None else PodRef(ns_name or "", pod),
        dir=d,
        links=links,  # type: ignore[arg-type]
        routes=tuple(routes) if routes_ok else None,
        rules=tuple(rules) if rules_ok else None,
        rulesets=None if (not nf_seen or (failed_nf and not rulesets) or xt_unread)
        else tuple(rulesets),
        ipsets=ipsets,
        listeners=listeners,  # type: ignore[arg-type]
        sysctls=sysctls,  # type: ignore[arg-type]
        problems=tuple(problems),
        files=frozenset(files),
        ipvs=ipvs,
        registrations=registrations,
        neighbors=neighbors,  # type: ignore[arg-type]
    )

