"""AMB1xx: what the bundle itself cannot tell.

These are not faults of the cluster but of the evidence: a command that failed on a
node, a file that does not parse, a truncated listing. They matter because every check
that needs that file is reported as skipped, never as passed, and the reader should know
why before trusting a clean report.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from ambientctl.analyzers.doctor.facts import Context
from ambientctl.analyzers.doctor.registry import Issue, check
from ambientctl.analyzers.findings import Evidence, Severity
from ambientctl.layout import CLUSTER_FILES, MANIFEST, split_netns_dir


def _where(path: str) -> tuple[str | None, str | None, str | None]:
    """(node, pod, netns id) of a bundle path."""
    split = split_netns_dir(path)
    if split is None:
        parts = path.split("/")
        return (parts[1] if len(parts) > 2 and parts[0] == "nodes" else None), None, None
    node, ns_name, pod, _ = split
    if pod is None:
        return node, None, f"{node}/host"
    return node, f"{ns_name}/{pod}", f"{node}/pod/{ns_name}/{pod}"


@check("AMB101", title="Bundle has no manifest", severity=Severity.INFO, area="collection",
       scope="bundle",
       remediation="Collect with `ambientctl collect` (it writes manifest.json with every "
                   "command, exit code and hash); a hand-assembled bundle is read by file name.")
def manifest_missing(ctx: Context) -> Iterator[Issue]:
    """Without a manifest, failed commands are invisible: a missing file is all we see."""
    if ctx.snap.manifest is None:
        yield Issue(message="the bundle has no manifest.json: it was assembled by hand, file "
                    "hashes are not verified and commands that failed on a node cannot be told "
                    "from files that were never collected",
                    evidence=(Evidence.missing(MANIFEST, "manifest.json at the bundle root"),))


@check("AMB102", title="A command failed on a node", severity=Severity.WARNING,
       area="collection", scope="bundle",
       remediation="Re-run the collection for that node once the cause in stderr is fixed "
                   "(binary missing from PATH, timeout: raise --timeout, not root: run as root).")
def command_failed(ctx: Context) -> Iterator[Issue]:
    """One finding per network namespace, listing every command that produced no file."""
    manifest = ctx.snap.manifest
    if manifest is None:
        return  # AMB101 says so
    grouped: dict[str, list[Evidence]] = {}
    # ok, or an optional tool that is not there (ipvsadm without IPVS), is data: left out
    for entry in manifest.not_collected_entries():
        dest = manifest.destination(entry) or f"{entry.target or '?'}/{entry.spec or '?'}"
        where = dest.rsplit("/", 1)[0]
        text = json.dumps({"target": entry.target, "spec": entry.spec, "argv": list(entry.argv),
                           "status": entry.status, "exit_code": entry.exit_code},
                          separators=(",", ":"))
        grouped.setdefault(where, []).append(Evidence(
            path=MANIFEST, text=text, note=f"{dest} not collected: {entry.reason()}"))
    for where, evs in sorted(grouped.items()):
        node, pod, netns = _where(where + "/x")
        names = ", ".join(e.note.split(" not collected")[0].rsplit("/", 1)[-1] for e in evs)
        yield Issue(message=f"{len(evs)} command(s) failed on {where}: {names}; checks that "
                    "need these files are skipped there", evidence=tuple(evs), node=node,
                    pod=pod, netns=netns)


@check("AMB103", title="A file could not be parsed", severity=Severity.WARNING,
       area="collection", scope="bundle", per_namespace=True,
       remediation="Look at the file at the line given; if the tool's output format is new, "
                   "report it with the file attached (ambientctl parsers are strict by design).")
def file_unparseable(ctx: Context) -> Iterator[Issue]:
    """Problems the parsers recorded (malformed line, invalid JSON)."""
    cluster_paths = set(CLUSTER_FILES.values())
    for p in ctx.snap.all_problems():
        if p.severity != "error" or p.message.startswith("not collected"):
            continue
        if p.path in cluster_paths and "missing" in p.message:
            continue
        node, pod, netns = _where(p.path)
        yield Issue(message=f"{p.path}" + (f" line {p.line}" if p.line else "")
                    + f" could not be used: {p.message}",
                    evidence=(Evidence(path=p.path, line=p.line, note=p.message),),
                    node=node, pod=pod, netns=netns)


@check("AMB104", title="An ipset listing looks truncated", severity=Severity.WARNING,
       area="collection", scope="bundle", per_namespace=True,
       remediation="Re-collect; `ipset list` output cut short (timeout, size cap) hides members, "
                   "so membership checks on that set are unreliable.")
def ipset_truncated(ctx: Context) -> Iterator[Issue]:
    """`Number of entries: N` disagrees with the members printed."""
    for ns in ctx.snap.namespaces():
        for s in (ns.ipsets or {}).values():
            if s.declared_entries is not None and s.declared_entries != len(s.members):
                yield Issue(message=f"ipset {s.name} on {ns.label} declares {s.declared_entries} "
                            f"entries but lists {len(s.members)}",
                            evidence=(Evidence.of(s.source, f"header of {s.name}"),),
                            node=ns.node, pod=str(ns.pod) if ns.pod else None, netns=ns.id)


@check("AMB105", title="Cluster objects missing from the bundle", severity=Severity.WARNING,
       area="collection", scope="bundle",
       remediation="Add them: `kubectl get pods -A -o json > cluster/pods.json` (likewise "
                   "services, namespaces -o json, nodes), or collect with `--cluster-dir`.")
def cluster_missing(ctx: Context) -> Iterator[Issue]:
    """Without pods.json doctor cannot tell which pods should be in the mesh."""
    missing = [(kind, CLUSTER_FILES[kind]) for kind in ("pods", "namespaces", "services", "nodes")
               if any(p.path == CLUSTER_FILES[kind] and "missing" in p.message
                      for p in ctx.snap.problems)]
    if missing:
        yield Issue(message=f"{', '.join(path for _, path in missing)} not in the bundle: checks "
                    "comparing the kernel state with the cluster's "
                    f"{', '.join(kind for kind, _ in missing)} are skipped",
                    evidence=tuple(Evidence.missing(path, f"the {kind} list")
                                   for kind, path in missing))


@check("AMB106", title="A node of the cluster was not collected", severity=Severity.INFO,
       area="collection", scope="bundle",
       remediation="Collect that node too (or filter it out knowingly); its pods' paths "
                   "cannot be checked.")
def node_not_collected(ctx: Context) -> Iterator[Issue]:
    """Nodes the cluster knows (nodes.json, pods' nodeName) with nothing in nodes/<node>/."""
    for name, view in sorted(ctx.nodes.items()):
        if view.state is not None:
            continue
        ev = next((Evidence.of(n.source, "node object") for n in ctx.snap.cluster.nodes
                   if n.name == name), None)
        if ev is None:
            ev = next((Evidence.of(p.source, "pod scheduled there") for p in view.pods), None)
        n_amb = len(view.expected)
        yield Issue(message=f"node {name} is in the cluster but not in the bundle (nothing under "
                    f"nodes/{name}/)" + (f"; {n_amb} ambient pod(s) run there" if n_amb else ""),
                    evidence=tuple(e for e in (ev, Evidence.missing(f"nodes/{name}/",
                                                                    "the node's files")) if e),
                    node=name)
