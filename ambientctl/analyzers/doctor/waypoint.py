"""AMB5xx: waypoints - a destination names a waypoint (`istio.io/use-waypoint`) that cannot
take its traffic. The facts are `analyzers.waypoint`'s, the same the trace follows, so a
trace that stops or skips a waypoint cites one of these checks.
"""

from __future__ import annotations

from collections.abc import Iterator

from ambientctl.analyzers import waypoint as wpt
from ambientctl.analyzers.doctor.facts import Context
from ambientctl.analyzers.doctor.registry import Issue, check
from ambientctl.analyzers.findings import Evidence, Severity
from ambientctl.model import Pod, Service

_CLUSTER = ("cluster:pods", "cluster:services", "cluster:namespaces")


def _bound(ctx: Context) -> Iterator[tuple[str, Pod | None, Service | None]]:
    """Every destination that can carry a waypoint binding: (traffic type, pod, Service)."""
    for svc in sorted(ctx.snap.cluster.services, key=lambda s: (s.namespace, s.name)):
        if svc.name != svc.labels.get(wpt.GATEWAY_NAME):  # not a waypoint's own Service
            yield "service", None, svc
    for pod in sorted(ctx.snap.cluster.pods, key=lambda p: (p.namespace, p.name)):
        if not (pod.host_network or wpt.is_waypoint_pod(pod) or
                wpt.is_ingress_gateway_pod(pod)):
            yield "workload", pod, None


def _issues(ctx: Context, want: str) -> Iterator[Issue]:
    """One issue per distinct (binding, problem) of check `want`; the pod of a pod-level
    binding is named so that a trace to it finds the finding."""
    seen: set[tuple[str, str]] = set()
    for _addressed, pod, svc in _bound(ctx):
        found = wpt.waypoint_for_traffic(ctx.snap, pod=pod, service=svc)
        if found is None:
            continue
        b, wp, hit = found
        if hit is None or hit[0] != want:
            continue
        _cid, message = hit
        if (b.on, message) in seen:
            continue
        seen.add((b.on, message))
        evidence = [Evidence.of(b.source, note=f"{wpt.USE_WAYPOINT}: {b.name} on {b.on}")]
        if wp.gateway is not None:
            evidence.append(Evidence.of(wp.gateway.source, note=f"Gateway {wp.label}"))
        elif wp.service is not None:
            evidence.append(Evidence.of(wp.service.source, note=f"Service {wp.label}"))
        for p in wp.pods:
            evidence.append(Evidence.of(p.source, note=f"waypoint pod {p.name} phase {p.phase}"))
        yield Issue(message=message, evidence=tuple(evidence),
                    pod=f"{pod.namespace}/{pod.name}" if pod is not None and b.level == "pod"
                    else None)


@check("AMB501", title="Waypoint named but missing", severity=Severity.ERROR, area="waypoint",
       scope="bundle", requires=_CLUSTER,
       remediation="Deploy the waypoint (`istioctl waypoint apply -n <ns> --name <name>`) or fix "
                   "the `istio.io/use-waypoint` label (and `istio.io/use-waypoint-namespace`).")
def waypoint_missing(ctx: Context) -> Iterator[Issue]:
    """A binding to a waypoint the cluster does not have: its L7 policy is not applied."""
    yield from _issues(ctx, "AMB501")


@check("AMB502", title="Waypoint has no ready endpoint", severity=Severity.ERROR,
       area="waypoint", scope="bundle", requires=_CLUSTER,
       remediation="Look at the waypoint Deployment's pods (`kubectl -n <ns> get pods -l "
                   "gateway.networking.k8s.io/gateway-name=<name>`): scheduling, image pulls, "
                   "readiness; ztunnel cannot send HBONE to a waypoint without a ready pod.")
def waypoint_not_ready(ctx: Context) -> Iterator[Issue]:
    """A waypoint whose pods are not running (or absent): bound traffic has nowhere to go."""
    yield from _issues(ctx, "AMB502")


@check("AMB503", title="Waypoint for the wrong traffic type", severity=Severity.WARNING,
       area="waypoint", scope="bundle", requires=_CLUSTER,
       remediation="Set `istio.io/waypoint-for` on the waypoint Gateway to the traffic it must "
                   "take (`service`, `workload` or `all`), or bind the waypoint where it "
                   "applies (a Service label for service traffic, a Pod label for workload "
                   "traffic).")
def waypoint_wrong_type(ctx: Context) -> Iterator[Issue]:
    """istiod binds a waypoint only to the traffic type of its `istio.io/waypoint-for`: the
    rest goes straight to the destination, without the waypoint's L7 policy."""
    yield from _issues(ctx, "AMB503")
