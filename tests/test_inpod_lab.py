"""The in-pod lab in the real kernel: where connections land, healthy and with each fault.

Every pod netns holds the rules of Istio's own goldens and an emulated ztunnel listening
inside it; every landing below is what the kernel did, not what we expect it to do. The
dumps of the lab's namespaces are also parsed and classified, tying the lab to the model.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ambientctl import model
from ambientctl.analyzers.classify import classify
from ambientctl.analyzers.parse import nft
from ambientctl.analyzers.parse.iproute import parse_ip_rule
from ambientctl.analyzers.parse.ipset import parse_ipset
from ambientctl.analyzers.parse.iptables import parse_iptables_save

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to build network namespaces"),
]

from ambientlab.inpod import FAULTS, KUBELET_UID, InpodLab  # noqa: E402

SLEEP = "ambient-worker/pod/default/sleep-7b85956664-z6qh7"
PP = "ambient-worker2/pod/default/productpage-v1-7c548b785b-w9zl6"
REVIEWS = "ambient-worker2/pod/default/reviews-v1-6494d87c7b-zrpks"
CURL = "ambient-worker/pod/outside/curl-5b7d9c7f4-q2wxz"
HTTPBIN = "ambient-worker2/pod/legacy/httpbin-6fcb98998c-k7v2x"
NODE2 = "ambient-worker2/host"
PP_IP, SLEEP_IP, PP_VIP, REVIEWS_VIP = "10.244.1.7", "10.244.2.4", "10.96.182.142", "10.96.47.113"
T = 1.0  # probe timeout: a "timeout" landing costs this much


def where(landing) -> tuple:
    """(netns, listener, local, original_dst, peer host) or (outcome,)."""
    if landing.outcome != "accepted":
        return (landing.outcome,)
    return (
        landing.netns,
        landing.listener,
        landing.local,
        landing.original_dst,
        landing.peer.rsplit(":", 1)[0],
    )


def ztunnel_to_app(lab: InpodLab):
    """ztunnel's inbound delivery: from the pod netns, mark 0x539, spoofed client source."""
    return lab.connect(PP, PP_IP, 9080, mark=0x539, src_ip=SLEEP_IP, timeout=T)


def run_in_netns(netns: str, fn) -> None:
    """Call fn() in a helper thread that entered `netns` (setns(2) is per thread)."""
    import threading

    from ambientlab import inpod_emulate

    err: list[BaseException] = []

    def work() -> None:
        fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
        try:
            assert inpod_emulate._libc.setns(fd, inpod_emulate.CLONE_NEWNET) == 0
        finally:
            os.close(fd)
        try:
            fn()
        except BaseException as exc:
            err.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if err:
        raise err[0]


def dump(lab: InpodLab, logical: str) -> model.NetNamespace:
    """Collect the namespace like a collector would and parse it with the project's parsers."""
    name = lab.netns_name(logical)

    def run(*argv: str) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", name, *argv], capture_output=True, text=True, check=True
        ).stdout

    rel = f"nodes/x/{logical}"
    nft_json = run("nft", "-j", "list", "ruleset")
    ipsets = dict(nft.nft_sets(nft_json, f"{rel}/nft-ruleset.json"))
    ipsets.update(parse_ipset(run("ipset", "list"), f"{rel}/ipset.txt"))
    return model.NetNamespace(
        id=logical,
        node=logical.split("/")[0],
        pod=None,
        dir=rel,
        rules=parse_ip_rule(run("ip", "rule"), f"{rel}/ip-rule.txt"),
        rulesets=(
            parse_iptables_save(run("iptables-save"), f"{rel}/iptables-save.txt"),
            nft.parse_nft_json(nft_json, f"{rel}/nft-ruleset.json"),
        ),
        ipsets=ipsets,
    )


@pytest.fixture(scope="module", params=["redirect", "tproxy", "nft"])
def healthy(request):
    with InpodLab(variant=request.param, mixed=True) as lab:
        yield lab


# --------------------------------------------------------------------------- healthy


def test_app_to_service_lands_on_its_own_netns_ztunnel_15001(healthy: InpodLab) -> None:
    got = healthy.connect(SLEEP, PP_VIP, 9080, timeout=T)
    assert where(got) == (SLEEP, "[::]:15001", "127.0.0.1:15001", f"{PP_VIP}:9080", SLEEP_IP)


def test_hbone_from_source_ztunnel_lands_on_destination_ztunnel_15008(healthy: InpodLab) -> None:
    got = healthy.connect(SLEEP, PP_IP, 15008, mark=0x539, timeout=T)
    assert where(got) == (PP, "[::]:15008", f"{PP_IP}:15008", f"{PP_IP}:15008", SLEEP_IP)


def test_ztunnel_delivers_to_the_app_over_lo_with_the_client_source(healthy: InpodLab) -> None:
    assert where(ztunnel_to_app(healthy)) == (
        PP,
        "0.0.0.0:9080",
        f"{PP_IP}:9080",
        f"{PP_IP}:9080",
        SLEEP_IP,
    )


def test_ztunnel_delivery_needs_ip_transparent_to_spoof_the_client(healthy: InpodLab) -> None:
    # The kernel refuses to bind a foreign source without IP_TRANSPARENT (ip(7)): the
    # probe helper sets it, as ztunnel does; without, bind() fails with EADDRNOTAVAIL.
    import socket

    def plain_bind() -> None:
        with socket.socket() as s:
            s.bind((SLEEP_IP, 0))

    with pytest.raises(OSError) as err:
        run_in_netns(healthy.netns_name(PP), plain_bind)
    assert err.value.errno == 99


def test_plaintext_from_outside_the_mesh_lands_on_inbound_15006(healthy: InpodLab) -> None:
    got = healthy.connect(CURL, PP_IP, 9080, timeout=T)
    # REDIRECT rewrites the destination; TPROXY keeps it (the socket sees 10.244.1.7:9080).
    local = f"{PP_IP}:9080" if healthy.variant == "tproxy" else f"{PP_IP}:15006"
    assert where(got) == (PP, "[::]:15006", local, f"{PP_IP}:9080", "10.244.2.9")


def test_outside_client_through_kube_proxy_service_dnat_lands_on_15006(healthy: InpodLab) -> None:
    got = healthy.connect(CURL, PP_VIP, 9080, timeout=T)
    assert where(got)[:2] == (PP, "[::]:15006")
    assert got.original_dst == f"{PP_IP}:9080"


def test_kubelet_probe_is_snatted_and_reaches_the_app_directly(healthy: InpodLab) -> None:
    got = healthy.connect(NODE2, PP_IP, 9080, uid=KUBELET_UID, timeout=T)
    assert where(got) == (PP, "0.0.0.0:9080", f"{PP_IP}:9080", f"{PP_IP}:9080", "169.254.7.127")
    assert got.client.startswith("10.244.1.1:")  # the node's own address before SNAT


def test_nft_probe_snat_only_matches_the_kubelet_uid(healthy: InpodLab) -> None:
    # iptables: `-m owner --socket-exists` (any local socket); nft: `meta skuid <kubelet>`.
    got = healthy.connect(NODE2, PP_IP, 9080, uid=0, timeout=T)
    if healthy.variant == "nft":
        assert where(got)[:2] == (PP, "[::]:15006") and got.peer.startswith("10.244.1.1:")
    else:
        assert got.peer.startswith("169.254.7.127:")


def test_sidecar_pod_inbound_lands_on_envoy_15006(healthy: InpodLab) -> None:
    got = healthy.connect(CURL, "10.244.1.10", 8000, timeout=T)
    assert where(got) == (
        HTTPBIN,
        "0.0.0.0:15006",
        "10.244.1.10:15006",
        "10.244.1.10:8000",
        "10.244.2.9",
    )


def test_sidecar_app_outbound_is_captured_but_envoy_uid_1337_is_not(healthy: InpodLab) -> None:
    app = healthy.connect(HTTPBIN, PP_VIP, 9080, timeout=T)
    assert where(app)[:3] == (HTTPBIN, "0.0.0.0:15001", "127.0.0.1:15001")
    envoy = healthy.connect(HTTPBIN, PP_IP, 9080, uid=1337, timeout=T)
    assert where(envoy)[:2] == (PP, "[::]:15006")  # sidecar -> ambient pod: plaintext inbound


def test_lab_dumps_classify_as_the_variant_says(healthy: InpodLab) -> None:
    pod = classify(dump(healthy, PP))
    assert pod.kind == "inpod-ambient"
    assert pod.inbound == ("tproxy" if healthy.variant == "tproxy" else "redirect")
    assert pod.backend == ("nftables" if healthy.variant == "nft" else "iptables")
    assert classify(dump(healthy, NODE2)).kind == "inpod-host"
    assert classify(dump(healthy, HTTPBIN)).kind == "sidecar"
    assert classify(dump(healthy, CURL)).kind == "not-captured"


def test_targets_and_cluster_files_describe_the_lab(healthy: InpodLab, tmp_path) -> None:
    targets = healthy.targets()
    names = {n["name"]: n for n in targets["nodes"]}
    assert set(names) == {"ambient-worker", "ambient-worker2"}
    pods = {(p["namespace"], p["name"]): p["netns"] for n in targets["nodes"] for p in n["pods"]}
    assert pods[("default", "productpage-v1-7c548b785b-w9zl6")] == healthy.netns_name(PP)
    assert names["ambient-worker2"]["host_netns"] == healthy.netns_name(NODE2)
    healthy.write_cluster(tmp_path)
    items = {
        p["metadata"]["name"]: p for p in json.loads((tmp_path / "pods.json").read_text())["items"]
    }
    pp = items["productpage-v1-7c548b785b-w9zl6"]
    assert pp["metadata"]["annotations"]["ambient.istio.io/redirection"] == "enabled"
    assert pp["status"]["podIP"] == PP_IP and pp["spec"]["nodeName"] == "ambient-worker2"
    tag = {"redirect": "1.24.0", "tproxy": "1.21.0", "nft": "1.28.0"}[healthy.variant]
    zt = [p for n, p in items.items() if n.startswith("ztunnel-")]
    assert len(zt) == 2 and all(p["spec"]["containers"][0]["image"].endswith(f":{tag}") for p in zt)
    assert "sidecar.istio.io/status" in items["httpbin-6fcb98998c-k7v2x"]["metadata"]["annotations"]
    ns = {
        n["metadata"]["name"]: n
        for n in json.loads((tmp_path / "namespaces.json").read_text())["items"]
    }
    assert ns["default"]["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient"
    svcs = {
        s["metadata"]["name"]: s["spec"]["clusterIP"]
        for s in json.loads((tmp_path / "services.json").read_text())["items"]
    }
    assert svcs == {"productpage": PP_VIP, "reviews": REVIEWS_VIP, "httpbin": "10.96.20.20"}


# --------------------------------------------------------------------------- faults


@pytest.fixture(params=["redirect", "tproxy", "nft"])
def variant(request) -> str:
    return request.param


def test_chains_missing_bypasses_the_mesh_both_ways(variant: str) -> None:
    with InpodLab(variant=variant) as lab:
        lab.inject("chains-missing-productpage")
        inbound = lab.connect(CURL, PP_IP, 9080, timeout=T)
        assert where(inbound)[:2] == (PP, "0.0.0.0:9080")  # straight to the app, no ztunnel
        outbound = lab.connect(PP, REVIEWS_VIP, 9080, timeout=T)
        assert where(outbound)[:2] == (REVIEWS, "[::]:15006")  # left uncaptured, plaintext
        assert ztunnel_to_app(lab).outcome == "timeout"  # no connmark: the reply leaves via eth0
        assert classify(dump(lab, PP)).kind == "not-captured"


def test_missing_ip_rule_breaks_ztunnel_to_app_delivery_only(variant: str) -> None:
    with InpodLab(variant=variant) as lab:
        lab.inject("ip-rule-32764-missing")
        assert ztunnel_to_app(lab).outcome == "timeout"
        assert where(lab.connect(CURL, PP_IP, 9080, timeout=T))[:2] == (PP, "[::]:15006")


def test_redirecting_15008_sends_hbone_to_the_plaintext_listener(variant: str) -> None:
    with InpodLab(variant=variant) as lab:
        lab.inject("redirect-15008")
        got = lab.connect(SLEEP, PP_IP, 15008, mark=0x539, timeout=T)
        assert where(got)[:2] == (PP, "[::]:15006")
        assert got.original_dst == f"{PP_IP}:15008"


def test_pod_missing_from_probe_set_gets_probes_through_ztunnel(variant: str) -> None:
    with InpodLab(variant=variant) as lab:
        lab.inject("probe-ipset-missing-productpage")
        got = lab.connect(NODE2, PP_IP, 9080, uid=KUBELET_UID, timeout=T)
        assert where(got)[:2] == (PP, "[::]:15006")
        assert got.peer.startswith("10.244.1.1:")  # not SNATed to 169.254.7.127


def test_both_backends_classify_as_both(variant: str) -> None:
    with InpodLab(variant=variant) as lab:
        lab.inject("nft-and-iptables-both")
        c = classify(dump(lab, PP))
        assert (c.kind, c.backend) == ("inpod-ambient", "both")
        got = lab.connect(CURL, PP_IP, 9080, timeout=T)
        # The nat REDIRECT of the second backend also applies: with TPROXY first, the
        # socket is the 15006 listener but the destination is rewritten to :15006 too.
        assert where(got)[:3] == (PP, "[::]:15006", f"{PP_IP}:15006")


def test_sidecar_pod_in_ambient_namespace_is_still_a_sidecar_pod(tmp_path) -> None:
    with InpodLab(variant="redirect", mixed=True) as lab:
        lab.inject("sidecar-in-ambient-namespace")
        lab.write_cluster(tmp_path)
        ns = {
            n["metadata"]["name"]: n
            for n in json.loads((tmp_path / "namespaces.json").read_text())["items"]
        }
        assert ns["legacy"]["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient"
        assert classify(dump(lab, HTTPBIN)).kind == "sidecar"
        assert where(lab.connect(CURL, "10.244.1.10", 8000, timeout=T))[:2] == (
            HTTPBIN,
            "0.0.0.0:15006",
        )


def test_ztunnel_not_listening_refuses_or_drops(variant: str) -> None:
    with InpodLab(variant=variant) as lab:
        lab.inject("ztunnel-not-listening-productpage")
        # REDIRECT to a port nobody listens on: RST. TPROXY without a transparent
        # listener: the kernel drops the packet (tproxy_tg4 returns NF_DROP).
        want = "timeout" if variant == "tproxy" else "refused"
        assert lab.connect(CURL, PP_IP, 9080, timeout=T).outcome == want
        assert lab.connect(SLEEP, PP_IP, 15008, mark=0x539, timeout=T).outcome == want
        assert lab.connect(PP, REVIEWS_VIP, 9080, timeout=T).outcome == "refused"  # 15001 gone
        assert where(ztunnel_to_app(lab))[:2] == (PP, "0.0.0.0:9080")  # the app itself is fine


def test_every_fault_is_known_and_unknown_ones_are_rejected() -> None:
    assert len(FAULTS) == 7
    with InpodLab(variant="redirect") as lab:
        with pytest.raises(ValueError):
            lab.inject("no-such-fault")
        assert lab.faults == []


def test_teardown_leaves_no_namespace_behind() -> None:
    lab = InpodLab(variant="nft", mixed=True)
    names = [lab.netns_name(SLEEP), lab.netns_name(NODE2)]
    lab.teardown()
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert not any(n in listed for n in names)
