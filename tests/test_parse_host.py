"""`parse_sysctl` and `parse_ss_listen`: real output, the Istio docs capture, malformed input."""

from __future__ import annotations

import dataclasses
import ipaddress
import pathlib
import random

import pytest

from ambientctl.analyzers.parse.host import parse_ss_listen, parse_sysctl
from ambientctl.errors import ParseError

RAW = pathlib.Path(__file__).resolve().parent / "fixtures" / "raw"
ip = ipaddress.ip_address


def read(rel: str) -> str:
    return (RAW / rel).read_text()


# ---------------------------------------------------------------- sysctl


def test_kernel_sysctl_net_lines() -> None:
    text = read("sysctl/kernel-net.txt")
    values = parse_sysctl(text, "nodes/w1/host/sysctl.txt")
    assert len(values) == len(text.splitlines())
    rp = values["net.ipv4.conf.all.rp_filter"]
    assert rp.value in {"0", "1", "2"} and rp.name == "net.ipv4.conf.all.rp_filter"
    assert text.splitlines()[rp.source.line - 1] == rp.source.text
    assert (
        "\t" in values["net.ipv4.tcp_rmem"].value
        and len(values["net.ipv4.tcp_rmem"].value.split()) == 3
    )


def test_stderr_lines_are_skipped_and_odd_values_kept() -> None:
    values = parse_sysctl(read("sysctl/with-stderr.txt"), "sysctl.txt")
    assert not any(k.startswith("sysctl") for k in values)
    assert values["net.ipv6.conf.all.stable_secret"].value == ""
    assert values["net.ipv4.tcp_rmem"].value == "4096\t131072\t6291456"
    assert values["net.ipv4.conf.eth0/100.rp_filter"].value == "2"  # "eth0.100" printed with "/"
    assert values["net.ipv4.conf.istioin.accept_local"].source.line == 6


def test_multi_line_values_are_joined() -> None:
    text = "kernel.core_modes = file\nkernel.core_modes = pipe\nnet.ipv4.ip_forward = 1\n"
    values = parse_sysctl(text, "sysctl.txt")
    assert values["kernel.core_modes"].value == "file\npipe"
    assert values["kernel.core_modes"].source.line == 1


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("net.ipv4.ip_forward = 1\nthis is not sysctl\n", 2),
        ("net.ipv4.ip_forward: 1\n", 1),
        ("= 1\n", 1),
    ],
)
def test_malformed_sysctl_names_the_line(text: str, line: int) -> None:
    with pytest.raises(ParseError) as exc:
        parse_sysctl(text, "sysctl.txt")
    assert exc.value.line == line and "not sysctl output" in exc.value.reason


@pytest.mark.parametrize("text", ["", "\n", "sysctl: permission denied on key 'x'\n"])
def test_sysctl_without_values_means_the_command_failed(text: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_sysctl(text, "sysctl.txt")
    assert "no sysctl values" in exc.value.reason


@pytest.mark.parametrize(
    "rel",
    ["iptables-save/inpod-default.iptables-save.txt", "ip-rule/kernel.txt", "ip-route/kernel-table-all.txt",
     "ip-addr/kernel-a.d.txt", "ipset/kernel-list.txt", "ss-listen/kernel-H.txt", "cluster/pods.json", "ip-rule/kernel.json"],
)  # fmt: skip
def test_sysctl_rejects_other_tools(rel: str) -> None:
    with pytest.raises(ParseError):
        parse_sysctl(read(rel), "sysctl.txt")


# ---------------------------------------------------------------- ss


def test_kernel_ss_with_and_without_header_agree() -> None:
    a = parse_ss_listen(read("ss-listen/kernel-H.txt"), "ss-listen.txt")
    b = parse_ss_listen(read("ss-listen/kernel-header.txt"), "ss-listen.txt")
    def strip(ls):
        return sorted(
            (dataclasses.replace(x, source=None) for x in ls), key=lambda x: x.port
        )
    assert strip(a) == strip(b) and len(a) == 7
    by = {x.port: x for x in a}
    assert (by[15001].address, by[15001].family) == (ip("127.0.0.1"), 4)
    assert by[15001].process.startswith('users:(("python') and "fd=3" in by[15001].process
    assert (by[22].address, by[22].family) == (None, 4)
    assert (by[15008].address, by[15008].family) == (None, None)  # "*": v6 socket without V6ONLY
    assert (by[15009].address, by[15009].family) == (None, 6)  # "[::]": V6ONLY
    assert (by[53].address, by[53].interface) == (ip("127.0.0.1"), "lo")
    assert by[80].address == ip("::ffff:127.0.0.1") and by[81].address == ip("::1")
    assert all(x.proto == "tcp" for x in a)


def test_wildcards_accept_what_the_kernel_accepts() -> None:
    by = {x.port: x for x in parse_ss_listen(read("ss-listen/kernel-H.txt"), "ss-listen.txt")}
    v4, v6 = ip("10.244.1.7"), ip("fd00::7")
    assert by[15008].accepts(v4) and by[15008].accepts(v6)
    assert not by[15009].accepts(v4) and by[15009].accepts(v6)
    assert by[22].accepts(v4) and not by[22].accepts(v6)
    assert by[15001].accepts(ip("127.0.0.1")) and not by[15001].accepts(v4)


def test_istio_docs_ss_capture() -> None:
    listeners = parse_ss_listen(read("ss-listen/istio-docs-ss-ntlp.txt"), "ss-listen.txt")
    assert [(x.port, x.address, x.family, x.process) for x in listeners] == [
        (15080, ip("127.0.0.1"), 4, None),
        (15006, None, None, None),
        (15001, None, None, None),
        (15008, None, None, None),
    ]
    assert listeners[0].source.line == 2


@pytest.mark.parametrize(
    ("local", "address", "family", "interface"),
    [
        ("[fe80::1]%eth0:22", ip("fe80::1"), 6, "eth0"),
        ("*%eth0:67", None, None, "eth0"),
        ("0.0.0.0%eth1:68", None, 4, "eth1"),
        (":::22", None, None, None),  # ss before 2017 printed every v6 wildcard this way
        ("10.244.1.7:9080", ip("10.244.1.7"), 4, None),
    ],
)
def test_local_address_forms(local: str, address, family, interface) -> None:
    (x,) = parse_ss_listen(f"LISTEN 0 128 {local} *:*\n", "ss-listen.txt")
    assert (x.address, x.family, x.interface, x.process) == (address, family, interface, None)


def test_netid_column_and_non_listening_rows() -> None:
    text = "Netid State Recv-Q Send-Q Local Address:Port Peer Address:Port\ntcp LISTEN 0 128 *:15008 *:*\ntcp ESTAB 0 0 10.0.0.1:22 10.0.0.2:5555\n"
    (x,) = parse_ss_listen(text, "ss.txt")
    assert (x.proto, x.port) == ("tcp", 15008)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("LISTEN 0 128 0.0.0.0:ssh 0.0.0.0:*\n", "not numeric"),
        ("LISTEN 0 128 0.0.0.0 0.0.0.0:*\n", "has no port"),
        ("LISTEN 0 128 host.example:22 0.0.0.0:*\n", "not an IP address"),
        ("LISTEN x 128 0.0.0.0:22 0.0.0.0:*\n", "not ss output"),
        ("LISTEN 0 128\n", "not ss output"),
        ("0:\tfrom all lookup local\n", "not ss output"),
    ],
)
def test_malformed_ss_names_the_line(text: str, reason: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_ss_listen(text, "ss-listen.txt")
    assert exc.value.line == 1 and reason in exc.value.reason


def test_empty_ss_output_means_nothing_listens() -> None:
    assert parse_ss_listen("", "ss-listen.txt") == ()
    assert (
        parse_ss_listen(read("ss-listen/kernel-header.txt").splitlines()[0] + "\n", "ss-listen.txt")
        == ()
    )


@pytest.mark.parametrize(
    "rel",
    ["iptables-save/inpod-default.iptables-save.txt", "ip-rule/kernel.txt", "ip-route/kernel-table-all.txt",
     "ip-addr/kernel-a.d.txt", "ipset/kernel-list.txt", "sysctl/kernel-net.txt", "cluster/pods.json", "ip-rule/kernel.json"],
)  # fmt: skip
def test_ss_rejects_other_tools(rel: str) -> None:
    with pytest.raises(ParseError):
        parse_ss_listen(read(rel), "ss-listen.txt")


@pytest.mark.parametrize("parser", [parse_ss_listen, parse_sysctl])
def test_garbage_raises_only_parse_error(parser) -> None:
    rng = random.Random(13)
    for _ in range(200):
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))).decode("latin-1")
        try:
            parser(junk, "x")
        except ParseError:
            pass


def test_truth_of_sysctls_does_not_index_the_lines() -> None:
    """Every parsed namespace is asked `bool(sysctls)` ("parsed" or "empty"): answering
    must not split and index the ~1,000 lines (that cost more than every lookup doctor
    makes); the answer agrees with the length once indexed."""
    from ambientctl.analyzers.parse.host import Sysctls

    values = parse_sysctl("sysctl: permission denied on key 'x'\nnet.ipv4.ip_forward = 1\n",
                          "sysctl.txt")
    assert isinstance(values, Sysctls)
    assert bool(values) is True
    assert values._index is None  # noqa: SLF001 - the laziness is the behaviour pinned
    assert len(values) == 1 and bool(values) is True
    assert bool(Sysctls("sysctl: permission denied on key 'x'\n\n", "s")) is False
