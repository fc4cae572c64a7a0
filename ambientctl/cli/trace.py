"""`ambientctl trace SRC DST`: the path of one request, hop by hop."""

from __future__ import annotations

import json

import click

from ambientctl.cli import cli
from ambientctl.cli.common import load, source_option
from ambientctl.errors import ExitCode, UsageError

DISPOSITIONS = ("delivered", "bypassed-mesh", "refused", "dropped", "no-route",
                "insufficient-info", "left-bundle", "loop")


@cli.command("trace")
@click.argument("src")
@click.argument("dst")
@source_option
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
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="Every rule, route and device behind each hop.")
@click.option("--expect", type=click.Choice(DISPOSITIONS), help="Exit 1 unless the trace ends "
              "with this disposition (for scripts and CI).")
def trace_cmd(src: str, dst: str, port: int | None, plaintext: bool, udp: bool, uid: int | None,
              endpoint: str | None, output: str,
              verbose: bool, expect: str | None, **source: object) -> int:
    """Trace a TCP connection from SRC to DST through the mesh.

    SRC and DST are a pod name, a unique prefix, namespace/name, a Deployment or `app`
    label, a Service name (its ClusterIP and port), node/NAME (SRC only) or an IP.
    """
    from ambientctl.analyzers.selectors import resolve
    from ambientctl.analyzers.trace import Tracer
    from ambientctl.render import trace_json, trace_text

    location, snap = load(source)
    s = resolve(snap, src, role="source")
    d = resolve(snap, dst, role="destination", port=port)
    if d.port is None:
        raise UsageError(f"destination {dst!r} has no single port to trace to",
                         hint="pass --port")
    if s.netns is None and not plaintext:
        raise UsageError(
            f"source {src!r} has no network namespace in the bundle "
            f"({'pod on node ' + s.node if s.node else 'not on any collected node'})",
            hint="collect that node, or trace from a pod or node/NAME that was collected",
        )
    pick = _endpoint_selector(snap, endpoint) if endpoint is not None else None
    t = Tracer(snap).trace(s, d, plaintext=plaintext, uid=uid, proto="udp" if udp else "tcp",
                           endpoint=pick)
    if output == "json":
        click.echo(json.dumps(trace_json.trace_document(t, location), indent=2))
    else:
        click.echo(trace_text.render(t, verbose=verbose), nl=False)
    # Bad data on the path: one line per problem on stderr and the bundle exit code.
    for problem in t.data_errors:
        click.echo(f"error: {problem}", err=True)
    culprits = [leg.result for leg in t.legs if leg.result.disposition.value == "insufficient-info"]
    if culprits:
        r = culprits[0]
        where = f" ({r.culprit})" if r.culprit else ""
        click.echo(f"error: cannot finish the trace: {r.reason}{where}", err=True)
    if culprits or t.data_errors:
        return int(ExitCode.BUNDLE)
    if expect and t.disposition.value != expect:
        click.echo(f"expected {expect}, got {t.disposition.value}", err=True)
        return int(ExitCode.FINDINGS)
    return int(ExitCode.OK)


def _endpoint_selector(snap: object, text: str) -> object:
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
        ep = resolve(snap, text, role="destination")  # type: ignore[arg-type]
    except SelectorError as exc:
        raise SelectorError(f"--endpoint: {exc.message}", hint=exc.hint) from None
    if ep.pod is None:
        raise UsageError(f"--endpoint {text!r} is not a pod or an IP address",
                         hint="name the endpoint pod (name, prefix or namespace/name) or its IP")
    return EndpointSelector.of(text, ep.pod.ips)
