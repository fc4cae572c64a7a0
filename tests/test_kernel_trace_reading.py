"""How the kernel-trace comparison reads `nft monitor trace` (ambientlab.nftrace).

The rule-by-rule comparison with the kernel (tests/test_rule_trace_kernel.py) is only as
good as its reading of the monitor's output; these pin that reading on printed lines, in
the format nft 1.0.6 prints, without a kernel.
"""

from __future__ import annotations

from ambientlab.nftrace import events_before, kernel_steps, parse_trace

HOOKS = {"host": {("inet", "ambientlab_trace", "pre"): "prerouting",
                  ("ip", "mangle", "PREROUTING"): "prerouting",
                  ("ip", "mangle", "FORWARD"): "forward"}}
POSITIONS = {"host": {("ip", "mangle", 6): ("PREROUTING", 1),
                      ("ip", "mangle", 9): ("FORWARD", 1)}}
SYN = "ip saddr 10.244.1.7 ip daddr 10.244.2.4 ip ttl {ttl} tcp sport 36916 tcp dport 80 " \
      "tcp flags == syn"
SYNACK = "ip saddr 10.244.2.4 ip daddr 10.244.1.7 ip ttl {ttl} tcp sport 80 tcp dport 36916 " \
         "tcp flags == 0x12"


def _forwarded(trace_id: str, headers: str, ttl: int) -> str:
    """One traversal of the node: the trace table marks it, mangle PREROUTING and FORWARD
    each match their first rule."""
    h = headers.format(ttl=ttl)
    return "\n".join([
        f"trace id {trace_id} inet ambientlab_trace pre packet: iif \"eth0\" {h}",
        f"trace id {trace_id} inet ambientlab_trace pre rule meta nftrace set 1 # handle 3 "
        "(verdict continue)",
        f"trace id {trace_id} inet ambientlab_trace pre policy accept",
        f"trace id {trace_id} ip mangle PREROUTING packet: iif \"eth0\" {h}",
        f"trace id {trace_id} ip mangle PREROUTING rule counter accept # handle 6 "
        "(verdict accept)",
        f"trace id {trace_id} ip mangle FORWARD packet: iif \"eth0\" {h}",
        f"trace id {trace_id} ip mangle FORWARD rule counter accept # handle 9 "
        "(verdict accept)",
    ]) + "\n"


ONE_PASS = [("host", "prerouting", "ip", "mangle", "PREROUTING", 1, "accept"),
            ("host", "forward", "ip", "mangle", "FORWARD", 1, "accept")]


def _steps(text: str, answer: bool) -> list[tuple[object, ...]]:
    got = kernel_steps({"host": parse_trace("host", text)}, answer, POSITIONS, HOOKS)
    return list(got.get("host", []))


def test_a_retransmitted_syn_ack_is_counted_once() -> None:
    text = (_forwarded("a1", SYN, 64) + _forwarded("b2", SYNACK, 64)
            + _forwarded("c3", SYNACK, 64))
    assert _steps(text, answer=True) == ONE_PASS


def test_a_retransmission_under_a_reused_trace_id_is_counted_once() -> None:
    # The id hashes the skb's address: a new skb can land where the freed one was.
    text = _forwarded("a1", SYN, 64) + _forwarded("b2", SYNACK, 64) * 2
    assert _steps(text, answer=True) == ONE_PASS


def test_a_routing_loop_is_not_collapsed() -> None:
    # Each pass through the loop arrives with one hop less to live.
    text = (_forwarded("a1", SYN, 64) + _forwarded("b2", SYNACK, 64)
            + _forwarded("c3", SYNACK, 62))
    assert _steps(text, answer=True) == ONE_PASS * 2


def test_the_syn_and_its_answer_are_read_apart() -> None:
    text = _forwarded("a1", SYN, 64) + _forwarded("b2", SYNACK, 64)
    assert _steps(text, answer=False) == ONE_PASS
    assert _steps(text, answer=True) == ONE_PASS


def test_what_follows_the_flush_datagram_is_left_out() -> None:
    flush = ('trace id f0 inet ambientlab_trace out packet: oif "lo" ip saddr 127.0.0.1 '
             'ip daddr 127.0.0.1 ip ttl 64 udp sport 50001 udp dport 9 udp length 13\n')
    late = _forwarded("c3", SYNACK, 64)
    events = events_before("host", _forwarded("b2", SYNACK, 64) + flush + late,
                           "udp sport 50001 udp dport 9 ")
    assert {e.trace_id for e in events} == {"b2"}
