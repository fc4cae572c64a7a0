"""classify(): which redirection design a namespace holds, on real dumps.

The dumps under tests/fixtures/inpod/<case>/ are what iptables-save, nft, ipset and ip
printed after the rules of each design were loaded into a throwaway netns
(tests/fixtures/inpod/regenerate.py); the models are built with the project's parsers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ambientctl import model
from ambientctl.analyzers.classify import Classification, classify
from ambientctl.analyzers.parse import nft
from ambientctl.analyzers.parse.iproute import parse_ip_rule
from ambientctl.analyzers.parse.ipset import parse_ipset
from ambientctl.analyzers.parse.iptables import parse_iptables_save

FIX = Path(__file__).parent / "fixtures" / "inpod"


def netns(
    case: str, *, pod: bool = True, overrides: dict[str, str] | None = None
) -> model.NetNamespace:
    """A NetNamespace from one fixture directory, parsed like the snapshot builder does."""
    d = FIX / case
    files = {p.name: p.read_text() for p in d.iterdir()}
    files.update(overrides or {})
    rel = (
        f"nodes/ambient-worker2/pods/default/{case}"
        if pod
        else f"nodes/ambient-worker2/host/{case}"
    )
    rulesets: list[model.Ruleset] = []
    for name in ("iptables-save.txt", "ip6tables-save.txt"):
        if name in files:
            rulesets.append(parse_iptables_save(files[name], f"{rel}/{name}"))
    ipsets: dict[str, model.IpSet] = {}
    if "nft-ruleset.json" in files:
        rulesets.append(nft.parse_nft_json(files["nft-ruleset.json"], f"{rel}/nft-ruleset.json"))
        ipsets.update(nft.nft_sets(files["nft-ruleset.json"], f"{rel}/nft-ruleset.json"))
    if "ipset.txt" in files:
        ipsets.update(parse_ipset(files["ipset.txt"], f"{rel}/ipset.txt"))
    rules = parse_ip_rule(files.get("ip-rule.txt", ""), f"{rel}/ip-rule.txt")
    return model.NetNamespace(
        id=f"ambient-worker2/pod/default/{case}" if pod else "ambient-worker2/host",
        node="ambient-worker2",
        pod=model.PodRef("default", case) if pod else None,
        dir=rel,
        rules=rules,
        rulesets=tuple(rulesets),
        ipsets=ipsets,
    )


def texts(c: Classification) -> list[str]:
    return [ref.text or "" for ref in c.evidence]


@pytest.mark.parametrize(
    ("case", "inbound", "backend", "dns", "ipv6", "generation"),
    [
        ("pod-redirect", "redirect", "iptables", True, False, "1.24+"),
        ("pod-tproxy", "tproxy", "iptables", True, False, "1.21-1.24"),
        ("pod-nft", "redirect", "nftables", True, False, "1.28+"),
        ("pod-ipv6", "redirect", "iptables", True, True, "1.24+"),
        ("pod-ingress", "none", "iptables", False, False, "1.24+"),
        ("pod-both", "redirect", "both", True, False, "1.28+"),
    ],
)
def test_inpod_pod_netns_generation_details(case, inbound, backend, dns, ipv6, generation) -> None:
    c = classify(netns(case))
    assert c.kind == "inpod-ambient"
    assert (c.inbound, c.backend, c.dns_capture, c.ipv6, c.generation) == (
        inbound,
        backend,
        dns,
        ipv6,
        generation,
    )
    assert c.also_seen == ()


def test_redirect_pod_evidence_names_the_chain_the_redirect_and_the_ip_rule() -> None:
    c = classify(netns("pod-redirect"))
    t = texts(c)
    assert ":ISTIO_PRERT - [0:0]" in t
    assert any("--to-ports 15006" in x for x in t)
    assert any("0x539/0xfff" in x for x in t)
    assert "32764:\tfrom all fwmark 0x111/0xfff lookup 100" in t
    assert all(
        ref.path.startswith("nodes/ambient-worker2/pods/default/pod-redirect/")
        for ref in c.evidence
    )
    assert all(ref.line for ref in c.evidence if ref.path.endswith(".txt"))


def test_tproxy_pod_evidence_is_the_mangle_tproxy_rule() -> None:
    c = classify(netns("pod-tproxy"))
    assert any("TPROXY --on-port 15006" in x for x in texts(c))
    assert not any("REDIRECT --to-ports 15006" in x for x in texts(c))


def test_nft_pod_evidence_points_into_the_nft_dump() -> None:
    c = classify(netns("pod-nft"))
    assert any(
        ref.path.endswith("nft-ruleset.json") and "redirect to :15006" in (ref.text or "")
        for ref in c.evidence
    )
    assert "table inet istio-ambient-nat" in texts(c)


def test_both_backends_are_reported_with_a_note() -> None:
    c = classify(netns("pod-both"))
    assert any("both iptables and nftables" in n for n in c.notes)


@pytest.mark.parametrize(
    ("case", "backend"),
    [("host-redirect", "iptables"), ("host-tproxy", "iptables"), ("host-nft", "nftables")],
)
def test_node_netns_with_probe_snat_is_inpod_host(case: str, backend: str) -> None:
    c = classify(netns(case, pod=False))
    assert (c.kind, c.backend) == ("inpod-host", backend)
    assert any("169.254.7.127" in x for x in texts(c))
    assert any("istio-inpod-probes" in x for x in texts(c))


def test_sidecar_pod_is_not_ambient() -> None:
    c = classify(netns("sidecar"))
    assert (c.kind, c.inbound, c.sidecar_via) == ("sidecar", "redirect", None)
    assert any("--uid-owner 1337" in x for x in texts(c))


@pytest.mark.parametrize(
    ("init", "via"), [("istio-validation", "istio-cni"), ("istio-init", "istio-init")]
)
def test_sidecar_init_container_tells_istio_cni_from_istio_init(init: str, via: str) -> None:
    status = json.dumps(
        {"initContainers": [init], "containers": ["istio-proxy"], "revision": "default"}
    )
    pod = model.Pod(
        namespace="legacy",
        name="httpbin",
        uid=None,
        node=None,
        ips=(),
        labels={},
        annotations={"sidecar.istio.io/status": status},
        phase="Running",
        host_network=False,
        source=model.SourceRef("cluster/pods.json"),
    )
    assert classify(netns("sidecar"), pod).sidecar_via == via


def test_cilium_ztunnel_rules_are_not_istio_cni() -> None:
    c = classify(netns("cilium"))
    assert c.kind == "cilium-ztunnel"
    assert ":CILIUM_PREROUTING - [0:0]" in texts(c)


def test_legacy_node_and_ztunnel_netns() -> None:
    node = classify(netns("legacy-node", pod=False))
    assert (node.kind, node.generation) == ("legacy-node", "2022-1.20")
    assert "101:\tfrom all fwmark 0x100/0x100 lookup 101" in texts(node)
    assert any(ref.path.endswith("ipset.txt") for ref in node.evidence)
    zt = classify(netns("legacy-ztunnel"))
    assert zt.kind == "legacy-ztunnel"
    assert any("-i pistioin" in x and "TPROXY" in x for x in texts(zt))
    assert any(x.startswith("20000:") for x in texts(zt))


def test_pod_without_rules_is_not_captured() -> None:
    c = classify(netns("plain-pod"))
    assert c == Classification(kind="not-captured")


def test_node_keeping_stale_legacy_chains_is_inpod_host_with_legacy_also_seen() -> None:
    legacy = (FIX / "legacy-node" / "iptables-save.txt").read_text()
    ns = netns("host-redirect", pod=False)
    stale = parse_iptables_save(legacy, "nodes/ambient-worker2/host/iptables-legacy-save.txt")
    ns = model.NetNamespace(**{**ns.__dict__, "rulesets": (*ns.rulesets, stale)})
    c = classify(ns)
    assert (c.kind, c.also_seen) == ("inpod-host", ("legacy-node",))


def test_malformed_rule_still_classifies_from_chain_names() -> None:
    text = (FIX / "pod-redirect" / "iptables-save.txt").read_text()
    broken = text.replace(
        "-A ISTIO_PRERT -s 169.254.7.127/32", "-A ISTIO_PRERT ! ! -s 169.254.7.127/32"
    )
    assert broken != text
    c = classify(netns("pod-redirect", overrides={"iptables-save.txt": broken}))
    assert c.kind == "inpod-ambient"
    assert any("ISTIO_PRERT" in n and "could not be read" in n for n in c.notes)


def test_flushed_pod_chains_leave_a_not_captured_pod() -> None:
    # istio/istio#61182: the pod is annotated, but its netns holds no rules.
    lines = (FIX / "pod-redirect" / "iptables-save.txt").read_text().splitlines()
    flushed = "\n".join(ln for ln in lines if "ISTIO" not in ln) + "\n"
    c = classify(
        netns(
            "pod-redirect",
            overrides={"iptables-save.txt": flushed, "nft-ruleset.json": '{"nftables": []}'},
        )
    )
    assert c.kind == "not-captured"
