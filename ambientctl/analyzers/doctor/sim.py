"""Small simulator questions the checks ask, answered with evidence.

Each helper runs `netfilter.run_hook` / `routing.lookup` on a sample packet and, when the
answer is not the one Istio relies on, says why with the rule or route responsible - or
with the absence of the rule that should have been there and the file it was looked in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ambientctl.analyzers import netfilter, routing
from ambientctl.analyzers.doctor.facts import file_of, routes_in
from ambientctl.analyzers.findings import Evidence
from ambientctl.analyzers.packet import Packet
from ambientctl.model import IPAddress, NetNamespace, RouteType, Ruleset


@dataclass(frozen=True)
class Gap:
    """Why the kernel would not do what Istio relies on, with the evidence."""

    why: str
    evidence: tuple[Evidence, ...]


def local_route_gap(ns: NetNamespace, *, mark: int, mask: int, prio: int, table: str,
                    dst: IPAddress, iif: str | None) -> Gap | None:
    """Does a packet carrying `mark` get routed to a `local` route (`ip rule prio ... lookup
    table` + `local default dev lo table T`)? None when it does."""
    r = routing.lookup(ns, dst=dst, mark=mark, iif=iif)
    if r.kind == "local":
        return None
    rules = [x for x in ns.rules or () if x.family == dst.version and x.fwmark is not None
             and (mark & x.fwmask) == (x.fwmark & x.fwmask) and (x.fwmask & mask) == mask]
    text = f"{prio}: from all fwmark {mark:#x}/{mask:#x} lookup {table}"
    if not rules:
        return Gap(f"no ip rule sends mark {mark:#x} to table {table}",
                   (Evidence.missing(file_of(ns, "ip-rule"), f"`{text}`"),))
    ev = [Evidence.of(rules[0].source, f"the ip rule for mark {mark:#x}")]
    t = rules[0].table or table
    local = [x for x in routes_in(ns, t) if x.type == RouteType.LOCAL and x.dst.prefixlen == 0
             and x.family == dst.version]
    if not local:
        default = "default" if dst.version == 4 else "::/0"
        ev.append(Evidence.missing(file_of(ns, "ip-route"),
                                   f"`local {default} dev lo table {t}`"))
        return Gap(f"table {t} has no `local {default} dev lo` route", tuple(ev))
    if r.rule is not None:
        ev.append(Evidence.of(r.rule.source, "the ip rule that answers first"))
    if r.route is not None:
        ev.append(Evidence.of(r.route.source, "the route chosen instead"))
    return Gap(f"the routing decision ends {r.kind}" + (f" ({r.reason})" if r.reason else ""),
               tuple(ev))


def hook(ns: NetNamespace, hook_name: str, pkt: Packet, *, listeners: bool = True,
         out_dev: str | None = None, out_src: IPAddress | None = None,
         local: frozenset[IPAddress] | None = None,
         chains: dict[tuple[str, int], netfilter.HookChains] | None = None,
         ) -> netfilter.HookResult:
    """Run one netfilter hook on a sample packet (listeners=False: assume any TPROXY target
    listens, so that the rules are judged apart from the sockets).

    `local`: `netfilter.local_addresses(ns)` when the caller has it already (a check that
    sends four sample packets through one pod computed it five times, walking the pod's
    addresses and routes each time); computed once here otherwise, for every context.
    `chains`: the caller's memo of `netfilter.hook_chains` for this namespace, by (hook,
    family), filled here (the walk and the later nat tables below both need it, and a
    check asks the same hook of one pod for several packets)."""
    if local is None:
        local = netfilter.local_addresses(ns)
    memo: dict[tuple[str, int], netfilter.HookChains] = {} if chains is None else chains
    at = memo.get((hook_name, pkt.family))
    if at is None:
        at = memo[(hook_name, pkt.family)] = netfilter.hook_chains(ns, hook_name, pkt.family)

    def context() -> netfilter.Context:
        return netfilter.Context(ns, local, ns.listeners if listeners else None, out_dev,
                                 out_src)

    res = netfilter.run_hook(ns, hook_name, pkt, context(), chains_at=at)
    if res.verdict != "accept":
        return res
    # The kernel runs the nat base chains of a hook in priority order *until one sets up a
    # mapping* (`nf_nat_inet_fn`: `if (nf_nat_initialized(ct, maniptype)) goto do_nat;`):
    # a nat chain that ends in ACCEPT without SNAT/DNAT does not stop the next one (checked
    # here: iptables-nft `-t nat -A POSTROUTING -j ACCEPT` followed by an nft nat chain at
    # priority 110 that SNATs - the connection arrives SNATed). `netfilter.run_hook` marks
    # the manip decided after the first nat table, so the later nat tables are run here.
    dst_manip = hook_name in ("prerouting", "output")
    walked = {id(st.table) for st in res.steps}
    later = [t for t, ch in at[0]
             if ch.base is not None and ch.base.kind == "nat" and id(t) not in walked]
    p = res.packet
    steps = list(res.steps)
    for table in later:
        mapped = (p.dst_addr != pkt.dst_addr) if dst_manip else (p.src != pkt.src)
        if mapped:
            break
        only = replace(ns, rulesets=(Ruleset(tables=(table,), source=table.source),))
        again = netfilter.run_hook(only, hook_name, replace(p, dnat_done=False) if dst_manip
                                   else replace(p, snat_done=False), context())
        steps.extend(again.steps)
        if again.verdict != "accept":
            return replace(again, steps=tuple(steps))
        p = again.packet
    return replace(res, packet=p, steps=tuple(steps))


def acting_step(res: netfilter.HookResult, *actions: str) -> netfilter.NfStep | None:
    """The last step of the walk whose action is one of `actions`."""
    for st in reversed(res.steps):
        if st.action in actions:
            return st
    return None


def last_step_evidence(res: netfilter.HookResult, note: str) -> Evidence | None:
    """Where the walk ended (a verdict rule or a policy)."""
    if not res.steps:
        return None
    st = res.steps[-1]
    return Evidence.of(st.source, f"{note}: {st.summary}")
