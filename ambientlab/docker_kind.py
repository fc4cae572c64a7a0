"""The seed lab's kind cluster as real node containers of a real Docker Engine.

    with Dockerd() as engine, DockerSeedLab(engine, engine.import_image(kind_node_rootfs())) as lab:
        # `ambientctl collect --kind ambient` with DOCKER_HOST=engine.host sees two kind
        # node containers (ambient-worker, ambient-worker2) holding the seed's datapath.

What is real here, beyond `ambientlab.seed.SeedLab` (whose build this reuses unchanged):
- each node is a container created with kind's name, hostname and labels
  (`io.x-k8s.kind.cluster`, `io.x-k8s.kind.role`) and kind's flags, except two this
  machine cannot grant: `--privileged` (the runtime cannot give CAP_SYS_RESOURCE here, so
  every other capability is added and seccomp/apparmor/systempaths are unconfined) and
  `--net kind` (the daemon runs with `--bridge=none`: the "kind" network is the lab's own
  bridge namespace, never the machine's root namespace);
- the node's netns IS the container's netns; each pod's netns is created inside the
  container with `ip netns add cni-<uuid>` (what containerd's CNI does on a kind node),
  so `docker exec NODE ip netns` lists them there and nowhere else on the machine;
- every rule (kube-proxy, istio-cni, ztunnel init) and every sysctl is loaded by
  `docker exec` into the container - through the image's own iptables/ipset/nft binaries
  - and so are the faults of `ambientlab.faults` (`lab.inject(...)`).
What is wired from the host, as docker and the CNI plugin would: the veth pairs and their
addresses/routes (`ip -n`), through names the lab gives the container namespaces in the
host's /var/run/netns (`ip netns attach` for a node, a bind mount of the nsfs file for a
pod); and the emulated listeners (`ambientlab.emulate`), host processes started inside the
pod namespaces (so `ss -p` inside a container shows the socket without a process name).
"""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from typing import Self

from ambientlab.docker_engine import Dockerd, docker_cli
from ambientlab.netns import NETNS_DIR, Lab, LabError, Netns
from ambientlab.seed import SeedLab, _suffix
from ambientlab.topology import NODES

KIND_CLUSTER = "ambient"
CLUSTER_LABEL = "io.x-k8s.kind.cluster"
ROLE_LABEL = "io.x-k8s.kind.role"


def pod_netns_name(pod_uid: str) -> str:
    """A stable `cni-<uuid>` name, the shape containerd gives pod namespaces on kind."""
    return "cni-" + str(uuid.UUID(hashlib.sha256(pod_uid.encode()).hexdigest()[:32]))


def kind_node_run_args(cluster: str, node: str, role: str, image: str) -> list[str]:
    """`docker run` arguments of a kind node container, as kind creates it, less what this
    machine cannot grant (see the module docstring)."""
    return [
        "run", "--detach", "--tty",
        "--name", node, "--hostname", node,
        "--label", f"{CLUSTER_LABEL}={cluster}", "--label", f"{ROLE_LABEL}={role}",
        "--network", "none",
        "--restart=on-failure:1", "--init=false",
        # kind: --privileged. CAP_SYS_RESOURCE is not in this machine's bounding set.
        "--cap-add=ALL", "--cap-drop=SYS_RESOURCE",
        "--security-opt", "seccomp=unconfined",
        "--security-opt", "apparmor=unconfined",
        "--security-opt", "systempaths=unconfined",
        "--tmpfs", "/tmp", "--tmpfs", "/run", "--volume", "/var",
        "-e", "container=docker",
        image,
    ]


class ContainerNetns(Netns):
    """A lab netns that lives in a node container: commands run through `docker exec`.

    `name` is the lab's host-side name for the same namespace (for `ip -n` wiring and the
    emulators); `inner` is its name inside the container (None: the container's own).
    """

    def __init__(self, lab: Lab, name: str, engine: Dockerd, container: str,
                 inner: str | None) -> None:
        super().__init__(lab, name)
        self.engine = engine
        self.container = container
        self.inner = inner

    def docker_exec_argv(self, *argv: str) -> list[str]:
        into = ["ip", "netns", "exec", self.inner] if self.inner else []
        return [docker_cli() or "docker", "-H", self.engine.host, "exec", "-i",
                self.container, *into, *argv]

    def exec(
        self, *argv: str, check: bool = True, stdin: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """`docker exec -i NODE [ip netns exec POD] ARGV...` (the container's binaries)."""
        return self.lab.run(self.docker_exec_argv(*argv), check=check, stdin=stdin,
                            timeout=timeout)


class ContainerLab(Lab):
    """A `Lab` whose node and pod namespaces are the containers' (see module docstring).

    `homes` maps a lab suffix to (container, netns name inside it or None for the node
    itself); any other suffix (the kind bridge) is a plain lab namespace.
    """

    def __init__(self, engine: Dockerd, homes: dict[str, tuple[str, str | None]],
                 lab_id: str | None = None) -> None:
        super().__init__(lab_id)
        self.engine = engine
        self.homes = homes

    def add_netns(self, suffix: str) -> Netns:
        if suffix not in self.homes:
            return super().add_netns(suffix)
        container, inner = self.homes[suffix]
        name = f"{self.id}-{suffix}"
        ns = ContainerNetns(self, name, self.engine, container, inner)
        self.namespaces[suffix] = ns
        self._save_registry()
        pid = self.engine.pid_of(container)
        if inner is None:
            self.run(["ip", "netns", "attach", name, str(pid)])
        else:
            self.engine.docker("exec", container, "ip", "netns", "add", inner)
            # The nsfs file of a netns made in another mount namespace may be bind-mounted
            # from here (fs/namespace.c do_loopback lets nsfs dentries cross mount ns).
            NETNS_DIR.mkdir(parents=True, exist_ok=True)
            (NETNS_DIR / name).touch()
            self.run(["mount", "--bind", f"/proc/{pid}/root/run/netns/{inner}",
                      str(NETNS_DIR / name)])
        ns.ip("link", "set", "lo", "up")
        return ns

    def teardown(self) -> None:
        """Drop the host-side names of container namespaces first (the containers keep the
        namespaces and their processes: the engine removes them), then the rest."""
        if self._closed:
            return
        for suffix in [s for s in self.namespaces if s in self.homes]:
            ns = self.namespaces.pop(suffix)
            if (NETNS_DIR / ns.name).exists():
                self.run(["ip", "netns", "del", ns.name], check=False)
        super().teardown()


class DockerSeedLab(SeedLab):
    """`SeedLab` whose nodes are kind node containers of `engine` (see module docstring)."""

    def __init__(self, engine: Dockerd, image: str, *, cluster: str = KIND_CLUSTER,
                 lab_id: str | None = None, emulate: bool = True) -> None:
        super().__init__(lab_id=lab_id, emulate=emulate)
        self.engine = engine
        self.image = image
        self.cluster = cluster
        self.containers: list[str] = []

    def __enter__(self) -> Self:
        self.build()
        return self

    def build(self) -> None:
        homes: dict[str, tuple[str, str | None]] = {}
        try:
            for node in NODES:
                self.engine.docker(*kind_node_run_args(self.cluster, node.name, "worker",
                                                       self.image))
                self.containers.append(node.name)
                homes[node.name.removeprefix("ambient-")] = (node.name, None)
                for pod in node.pods:
                    homes[_suffix(pod)] = (node.name, pod_netns_name(pod.pod_uid))
            self.lab = ContainerLab(self.engine, homes, self._lab_id)
            self._build()
        except BaseException:
            self.teardown()
            raise

    def pod_netns_in_container(self, logical_id: str) -> str | None:
        """The name a lab namespace has inside its container (None: the node's own)."""
        ns = self.netns(logical_id)
        if not isinstance(ns, ContainerNetns):
            raise LabError(f"{logical_id} is not inside a node container")
        return ns.inner

    def teardown(self) -> None:
        super().teardown()
        if self.containers:
            self.engine.docker("rm", "-f", *self.containers, check=False)
            self.containers = []
