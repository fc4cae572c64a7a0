"""SSH transport against a real OpenSSH sshd running inside an emulated node.

Host-key rules (perf-reliability.md S2): unknown keys refused unless --ssh-accept-new,
which records them; a CHANGED key refused in every mode, including accept-new.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from ambientctl.collectors.ssh import (
    SshEndpoint,
    SshTransport,
    load_inventory,
    parse_ssh_spec,
)
from ambientctl.collectors.transport import NetnsRef
from ambientctl.errors import TransportError, UsageError
from tests.peers.sshd import Sshd

NODE = "ambient-worker2"
POD = "default/productpage-v1-7c548b785b-w9zl6"

pytest_plugins = ["tests.peers.fixtures"]


def endpoint(s: Sshd, key: Path, **kw: Any) -> SshEndpoint:
    return SshEndpoint(
        node=NODE, host="127.0.0.1", port=s.port, user="root", key_file=str(key), **kw
    )


# --------------------------------------------------------------------------- no sshd needed


def test_spec_parsing_names_nodes_and_validates_every_part() -> None:
    eps = parse_ssh_spec(
        "ambient-worker=core@10.0.0.5:2222,node-b.example,n3=[fd00::1]:2200",
        user="root",
        key_file="~/.ssh/k",
    )
    assert [(e.node, e.user, e.host, e.port) for e in eps] == [
        ("ambient-worker", "core", "10.0.0.5", 2222),
        ("node-b.example", "root", "node-b.example", 22),
        ("n3", "root", "fd00::1", 2200),
    ]
    assert eps[2].known_hosts_name() == "[fd00::1]:2200"
    for bad in (
        "n=us;er@h",
        "n=u@h;reboot",
        "n=u@h:99999",
        "Bad_Node=u@h",
        "n=u@$(x)",
        "",
        "[fd00::1]:22",
    ):  # an address is no node name: NODE= is required
        with pytest.raises(UsageError):
            parse_ssh_spec(bad)


def test_inventory_gives_user_port_key_sudo_and_jump(tmp_path: Path) -> None:
    inv = tmp_path / "inv.toml"
    inv.write_text(
        '[defaults]\nuser = "core"\nkey = "~/.ssh/id"\njump = "bastion"\nsudo = true\n'
        '[jump.bastion]\nhost = "203.0.113.7"\nport = 2200\n'
        '[[nodes]]\nname = "worker-1"\nhost = "10.0.0.11"\n'
        '[[nodes]]\nname = "worker-2"\nport = 2022\nuser = "admin"\njump = ""\n'
    )
    w1, w2 = load_inventory(str(inv))
    assert (w1.node, w1.host, w1.port, w1.user, w1.sudo) == (
        "worker-1",
        "10.0.0.11",
        22,
        "core",
        True,
    )
    assert w1.jump is not None and (w1.jump.host, w1.jump.port, w1.jump.user) == (
        "203.0.113.7",
        2200,
        "core",
    )
    assert (w2.host, w2.port, w2.user, w2.jump) == ("worker-2", 2022, "admin", None)
    inv.write_text('[[nodes]]\nhost = "x"\n')
    with pytest.raises(UsageError, match="name"):
        load_inventory(str(inv))


def test_the_command_string_quotes_every_argument() -> None:
    t = SshTransport(SshEndpoint(node="n", host="h", sudo=True))
    line = t.command_line(["ip", "-j", "addr"], NetnsRef(path="/var/run/netns/cni-1"))
    assert line == "sudo -n -- nsenter --net=/var/run/netns/cni-1 -- ip -j addr"
    assert t.command_line(["sh", "-c", "echo $HOME; x"], None) == "sudo -n -- sh -c 'echo $HOME; x'"


# --------------------------------------------------------------------------- real sshd


@pytest.mark.kernel
def test_exec_runs_on_the_node_and_in_its_pod_netns(
    sshd_nodes: dict[str, Sshd], peer_dir: Path, seed_lab: Any
) -> None:
    t = SshTransport(
        endpoint(sshd_nodes[NODE], peer_dir / "id_client"),
        known_hosts=str(peer_dir / "known_hosts"),
    )
    host = t.run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"], netns=None, timeout=10)
    assert host.exit_code == 0 and b"172.18.0." in host.stdout
    pod = NetnsRef(name=seed_lab.netns_name(f"{NODE}/pod/{POD}"))
    res = t.run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"], netns=pod, timeout=10)
    assert res.exit_code == 0 and b"10.244.1.7/24" in res.stdout
    res = t.run(["sh", "-c", "echo out; echo err >&2; exit 5"], netns=None, timeout=10)
    assert (res.stdout, res.stderr, res.exit_code) == (b"out\n", b"err\n", 5)
    assert t.run(["no-such-tool"], netns=None, timeout=10).not_found
    assert t.run(["no-such-tool"], netns=pod, timeout=10).not_found
    slow = t.run(["sh", "-c", "echo first; sleep 20"], netns=None, timeout=1)
    assert slow.timed_out and slow.stdout == b"first\n" and slow.exit_code is None
    t.close()


@pytest.mark.kernel
def test_unknown_host_key_is_refused_by_default(
    sshd_nodes: dict[str, Sshd], peer_dir: Path, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    t = SshTransport(endpoint(sshd_nodes[NODE], peer_dir / "id_client"), known_hosts=str(known))
    with pytest.raises(TransportError, match="not in .*refusing to connect") as err:
        t.run(["true"], netns=None, timeout=5)
    assert "--ssh-accept-new" in (err.value.hint or "")
    assert not known.exists()  # nothing recorded without the opt-in


@pytest.mark.kernel
def test_accept_new_records_an_unknown_key_then_trusts_only_that_key(
    sshd_nodes: dict[str, Sshd], peer_dir: Path, tmp_path: Path
) -> None:
    s = sshd_nodes[NODE]
    known = tmp_path / "sub" / "known_hosts"  # neither file nor directory exists yet
    t = SshTransport(endpoint(s, peer_dir / "id_client"), known_hosts=str(known), accept_new=True)
    assert t.run(["true"], netns=None, timeout=10).exit_code == 0
    t.close()
    assert known.read_text() == s.known_hosts_line()
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    # strict mode now trusts the recorded key
    strict = SshTransport(endpoint(s, peer_dir / "id_client"), known_hosts=str(known))
    assert strict.run(["true"], netns=None, timeout=10).exit_code == 0
    strict.close()


@pytest.mark.kernel
@pytest.mark.parametrize("accept_new", [False, True])
def test_a_changed_host_key_is_always_refused(
    sshd_nodes: dict[str, Sshd], peer_dir: Path, tmp_path: Path, accept_new: bool
) -> None:
    s, other = sshd_nodes[NODE], sshd_nodes["ambient-worker"]
    known = tmp_path / "known_hosts"
    known.write_text(s.known_hosts_line(key=other.host_pub))  # a different key for this host
    t = SshTransport(
        endpoint(s, peer_dir / "id_client"), known_hosts=str(known), accept_new=accept_new
    )
    with pytest.raises(TransportError, match="host key CHANGED") as err:
        t.run(["true"], netns=None, timeout=5)
    assert "ssh-keygen -R" in (err.value.hint or "")
    assert known.read_text() == s.known_hosts_line(key=other.host_pub)  # not overwritten
    # the refusal sticks for the transport: no retry per command
    with pytest.raises(TransportError, match="CHANGED"):
        t.run(["true"], netns=None, timeout=5)


@pytest.mark.kernel
@pytest.mark.parametrize("accept_new", [False, True])
def test_a_revoked_host_key_is_refused_even_when_also_listed_as_known(
    sshd_nodes: dict[str, Sshd], peer_dir: Path, tmp_path: Path, accept_new: bool
) -> None:
    s = sshd_nodes[NODE]
    kind, blob = s.host_pub
    known = tmp_path / "known_hosts"
    text = s.known_hosts_line() + f"@revoked * {kind} {blob} compromised\n"
    known.write_text(text)
    t = SshTransport(
        endpoint(s, peer_dir / "id_client"), known_hosts=str(known), accept_new=accept_new
    )
    with pytest.raises(TransportError, match="@revoked"):
        t.run(["true"], netns=None, timeout=5)
    assert known.read_text() == text  # never recorded, whatever the mode


@pytest.mark.kernel
def test_cert_authority_and_unparsable_lines_are_skipped_as_openssh_does(
    sshd_nodes: dict[str, Sshd], peer_dir: Path, tmp_path: Path
) -> None:
    s, other = sshd_nodes[NODE], sshd_nodes["ambient-worker"]
    kind, blob = other.host_pub
    known = tmp_path / "known_hosts"
    ca_line = f"@cert-authority *.example.com,127.0.0.1 {kind} {blob}\n"
    junk = "# comment\n\n[h]:22 ssh-unknown AAAA\nbroken-line\nh2 ssh-ed25519 !!notbase64!!\n"
    known.write_text(ca_line + junk + s.known_hosts_line())
    t = SshTransport(endpoint(s, peer_dir / "id_client"), known_hosts=str(known))
    assert t.run(["true"], netns=None, timeout=10).exit_code == 0
    t.close()
    # A CA line alone never makes a plain host key trusted: the host is unknown.
    known.write_text(f"@cert-authority * {s.host_pub[0]} {s.host_pub[1]}\n")
    t = SshTransport(endpoint(s, peer_dir / "id_client"), known_hosts=str(known))
    with pytest.raises(TransportError, match="not in .*refusing to connect"):
        t.run(["true"], netns=None, timeout=5)


@pytest.mark.kernel
def test_a_jump_host_reaches_the_node_through_direct_tcpip(
    sshd_nodes: dict[str, Sshd], peer_dir: Path, tmp_path: Path
) -> None:
    s = sshd_nodes[NODE]
    with Sshd(tmp_path / "jump", client_pub=peer_dir / "id_client.pub") as jump:
        key = peer_dir / "id_client"
        known = tmp_path / "known_hosts"
        known.write_text(s.known_hosts_line() + jump.known_hosts_line())
        ep = endpoint(
            s,
            key,
            jump=SshEndpoint(
                node="jump", host="127.0.0.1", port=jump.port, user="root", key_file=str(key)
            ),
        )
        t = SshTransport(ep, known_hosts=str(known))
        res = t.run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"], netns=None, timeout=10)
        assert res.exit_code == 0 and b"172.18.0." in res.stdout
        t.close()
        assert any("Accepted publickey" in line for line in jump.log)
        # the jump host's own key is checked too
        known.write_text(s.known_hosts_line())
        with pytest.raises(TransportError, match="not in"):
            SshTransport(ep, known_hosts=str(known)).run(["true"], netns=None, timeout=5)


# Not kernel-marked: where the `sudo` package is absent this skips, and under
# AMBIENTCTL_REQUIRE_KERNEL=1 a skipped kernel test counts as a failure.
@pytest.mark.skipif(shutil.which("sudo") is None, reason="sudo is not installed")
def test_sudo_runs_the_command_non_interactively(
    sshd_nodes: dict[str, Sshd], peer_dir: Path
) -> None:
    t = SshTransport(
        endpoint(sshd_nodes[NODE], peer_dir / "id_client", sudo=True),
        known_hosts=str(peer_dir / "known_hosts"),
    )
    res = t.run(["id", "-u"], netns=None, timeout=10)
    assert res.exit_code == 0 and res.stdout == b"0\n"
    assert t.run(["no-such-tool"], netns=None, timeout=10).not_found
    t.close()


@pytest.mark.kernel
def test_an_unreachable_node_is_a_transport_error(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = SshTransport(
        SshEndpoint(node="n", host="127.0.0.1", port=port, user="root"),
        known_hosts=str(tmp_path / "kh"),
        connect_timeout=2,
    )
    with pytest.raises(TransportError, match="cannot connect"):
        t.run(["true"], netns=None, timeout=5)
