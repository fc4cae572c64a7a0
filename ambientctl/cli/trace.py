"""`ambientctl trace SRC DST`: the path of one request, hop by hop."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from ambientctl.cli import cli
from ambientctl.cli.common import load, source_option
from ambientctl.errors import ExitCode, UsageError
from ambientctl.render.terminal import terminal_safe

if TYPE_CHECKING:  # the analyzers load lazily, when a command runs
    from ambientctl.analyzers.fork import EndpointSelector
    from ambientctl.analyzers.snapshot import Snapshot

DISPOSITIONS = ("delivered", "bypassed-mesh", "refused", "dropped", "no-route",
                "insufficient-info", "left-bundle", "loop")


@cli.command("trace")
@click.argument("src")
@click.argument("dst")
@source_option
@click.option("-n", "--namespace", "namespace", metavar="NS", help="Namespace of SRC and DST "
              "names that carry none (like kubectl -n).")
@click.option("--port", type=click.IntRange(1, 65535), help="Destination port (overrides the "
              "Service's or pod's port).")
@click.option("--plaintext", is_flag=True, help="Send as a client outside the mesh on SRC's node "
              "(host network) would: shows the inbound plaintext (15006) path.")
@click.option("--udp", is_flag=True, help="Trace a UDP datagram instead of a TCP connection "
              "(e.g. DNS to port 53, captured to ztunnel's 15053).")
@click.option("--uid", type=click.IntRange(0), help="Owner uid of the client's socket, when rules "
              "match on it (e.g. the kubelet's uid for the nftables backend's probe SNAT).")
@click.option("--endpoint", "endpoint", metavar="POD|IP", help="Where the path forks over a "
              "Service's endpoints (kube-proxy's random choice), follow the one reaching this "
              "pod or address; without it the first is followed. Every fork is stated.")
@click.option("-o", "--output", type=click.Choice(["text", "json", "html", "dot", "mermaid"]),
              default="text", show_default=True, help="html: a self-contained page with the "
              "path drawn; dot/mermaid: the path as a graph for docs and tickets.")
@click.option("-v", "--verbose", is_flag=True, help="Every rule, route and device behind each hop.")
@click.option("--compare", "compare", metavar="OLD", help="Also trace the pair in bundle OLD "
              "(e.g. from when it worked): both paths, the first step where they part, and "
              "the bundle differences that explain it.")
@click.option("--expect-mtls", is_flag=True, help="Exit 1 unless every leg that crosses a node "
              "boundary is mTLS (HBONE).")
@click.option("--expect", type=click.Choice(DISPOSITIONS), help="Exit 1 unless the trace ends "
              "with this disposition (for scripts and CI).")
def trace_cmd(src: str, dst: str, namespace: str | None, port: int | None, plaintext: bool, udp: bool, uid: int | None,
              endpoint: str | None, output: str,
              verbose: bool, compare: str | None, expect_mtls: bool, expect: str | None,
              **source: object) -> int:
    """Trace a TCP connection from SRC to DST through the mesh.

    SRC and DST are what kubectl and curl take: a pod name or unique prefix,
    NS/NAME, pod/NAME, deploy/NAME, svc/NAME, NAME.NS, NAME.NS.svc.cluster.local,
    node/NAME (SRC only), an IP, HOST:PORT or a URL; a Deployment or `app` label.
    """
    from ambientctl.analyzers.selectors import resolve
    from ambientctl.analyzers.trace import Tracer
    from ambientctl.render import trace_json, trace_text

    location, snap = load(source)
    s = resolve(snap, src, role="source", namespace=namespace)
    d = resolve(snap, dst, role="destination", port=port, namespace=namespace)
    if d.port is None:
        raise UsageError(f"destination {dst!r} has no single port to trace to",
                         hint="pass --port")
    if s.netns is None and not plaintext:
        raise UsageError(
            f"source {src!r} has no network namespace in the bundle "
            f"({'pod on node ' + s.node if s.node else 'not on any collected node'})",
            hint="collect that node, or trace from a pod or node/NAME that was collected",
        )
    pick = _endpoint_selector(snap, endpoint, namespace) if endpoint is not None else None
    t = Tracer(snap).trace(s, d, plaintext=plaintext, uid=uid, proto="udp" if udp else "tcp",
                           endpoint=pick)
    if compare is not None:
        if output not in ("text", "json"):
            raise UsageError("--compare prints text or json", hint="drop -o or use -o json")
        return _compare(compare, t, location, snap, src, dst, namespace, port,
                        dict(plaintext=plaintext, uid=uid, proto="udp" if udp else "tcp",
                             endpoint=pick),
                        output)
    from ambientctl.analyzers.verdict import crossing_legs_mtls, judge

    verdict = judge(snap, t, plaintext=plaintext, uid=uid)
    if output == "json":
        click.echo(json.dumps(trace_json.trace_document(t, location, verdict), indent=2))
    elif output in ("html", "dot", "mermaid"):
        from ambientctl.render import graph, html
        from ambientctl.render.provenance import bundle_header

        doc = trace_json.trace_document(t, location, verdict)
        if output == "html":
            click.echo(html.report_html([doc], None, bundle_header(location, snap),
                                        title=f"ambientctl trace {src} {dst}"), nl=False)
        else:
            click.echo(terminal_safe((graph.to_dot if output == "dot" else graph.to_mermaid)(doc)),
                   nl=False)
    else:
        from ambientctl.render.provenance import provenance_lines
        from ambientctl.render.term import Term

        click.echo(trace_text.render(t, verbose=verbose, header=provenance_lines(location, snap),
                                     term=Term.detect(), verdict=verdict), nl=False)
    # Bad data on the path: one line per problem on stderr and the bundle exit code.
    for problem in t.data_errors:
        click.echo(terminal_safe(f"error: {problem}"), err=True)
    culprits = [leg.result for leg in t.legs if leg.result.disposition.value == "insufficient-info"]
    if culprits:
        r = culprits[0]
        where = f" ({r.culprit})" if r.culprit else ""
        click.echo(terminal_safe(f"error: cannot finish the trace: {r.reason}{where}"), err=True)
    if culprits or t.data_errors:
        return int(ExitCode.BUNDLE)
    if expect and t.disposition.value != expect:
        click.echo(f"expected {expect}, got {t.disposition.value}", err=True)
        return int(ExitCode.FINDINGS)
    if expect_mtls and not crossing_legs_mtls(t, verdict):
        plain = [f"leg {leg.index} ({leg.direction})" for leg, m in zip(t.legs, verdict.mtls,
                                                                       strict=True)
                 if m is not True and len({h.node for h in leg.result.hops}) > 1]
        click.echo(f"expected mTLS on every leg between nodes; plaintext: {', '.join(plain)}",
                   err=True)
        return int(ExitCode.FINDINGS)
    return int(ExitCode.OK)


def _endpoint_selector(snap: Snapshot, text: str, namespace: str | None = None
                       ) -> EndpointSelector:
    """`--endpoint POD|IP` -> an EndpointSelector (a pod stands for all its addresses)."""
    import ipaddress

    from ambientctl.analyzers.fork import EndpointSelector
    from ambientctl.analyzers.selectors import resolve
    from ambientctl.errors import SelectorError

    try:
        return EndpointSelector.of(text, [ipaddress.ip_address(text)])
    except ValueError:
        pass
    try:
        ep = resolve(snap, text, role="destination", namespace=namespace)
    except SelectorError as exc:
        raise SelectorError(f"--endpoint: {exc.message}", hint=exc.hint) from None
    if ep.pod is None:
        raise UsageError(f"--endpoint {text!r} is not a pod or an IP address",
                         hint="name the endpoint pod (name, prefix or namespace/name) or its IP")
    return EndpointSelector.of(text, ep.pod.ips)


def _compare(old_path: str, t: object, location: str, snap: object, src: str, dst: str,
             namespace: str | None, port: int | None, how: dict[str, object],
             output: str) -> int:
    """`--compare OLD`: trace the same pair in OLD; where the paths part, and why."""
    from ambientctl.analyzers.compare import first_divergence
    from ambientctl.analyzers.diff import diff_bundles
    from ambientctl.analyzers.selectors import resolve
    from ambientctl.analyzers.trace import Tracer
    from ambientctl.analyzers.verdict import judge
    from ambientctl.loading import load_snapshot
    from ambientctl.render import diff_out, trace_json
    from ambientctl.resources import bundle_argument

    old_location = bundle_argument(old_path)
    old_snap = load_snapshot(old_location)
    s = resolve(old_snap, src, role="source", namespace=namespace)
    d = resolve(old_snap, dst, role="destination", port=port, namespace=namespace)
    old_t = Tracer(old_snap).trace(s, d, **how)  # type: ignore[arg-type]
    entries = diff_bundles(old_snap, snap)  # type: ignore[arg-type]
    div = first_divergence(old_t, t, entries)  # type: ignore[arg-type]
    if output == "json":
        click.echo(json.dumps(diff_out.compare_document(
            trace_json.trace_document(old_t, old_location, judge(old_snap, old_t)),
            trace_json.trace_document(t, location, judge(snap, t)),  # type: ignore[arg-type]
            div), indent=2))
    else:
        click.echo(diff_out.compare_text(old_t.summary, t.summary, div), nl=False)  # type: ignore[attr-defined]
    return int(ExitCode.OK if div is None else ExitCode.FINDINGS)
