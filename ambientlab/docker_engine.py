"""A real Docker Engine for tests: a private `dockerd` and a locally built kind-node image.

    with Dockerd() as engine:                 # its own socket, data root and exec root
        image = engine.import_image(kind_node_rootfs())
        engine.docker("run", "-d", "--name", "n1", "--network", "none", image)

Why a private daemon: the machine may run (or not run) a docker of its own; the tests must
neither depend on it nor disturb it. The daemon is started with

    --iptables=false --ip6tables=false --ip-forward=false --bridge=none

so that it never writes the machine's root network namespace: no NAT/filter rules, no
`net.ipv4.ip_forward` flip (dockerd sets it at start unless told not to), no docker0
bridge. Containers therefore get `--network none` (a netns holding only `lo`); whatever
links they need are built between their namespaces by the test (ambientlab.docker_kind).

Why a locally built image: no image registry is reachable. `debootstrap --variant=minbase`
from the machine's configured Debian mirror, plus the tools a kind node carries that the
collector runs (iptables, ipset, iproute2, nftables, procps, curl), is tarred and
`docker import`ed. The tarball is cached under /var/cache/ambientlab/kind-node-image/KEY
where KEY hashes everything that decides its content (suite, mirror, package list,
variant, builder version); a fresh machine (CI) builds it itself.

Teardown (`close`) removes every container, stops the daemon (SIGTERM, then SIGKILL of its
process group), unmounts whatever is still mounted under its directories and deletes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

SUITE = "bookworm"
PACKAGES = ("iptables", "ipset", "iproute2", "nftables", "procps", "curl")
IMAGE_BUILDER_VERSION = "1"
CACHE_DIR = Path("/var/cache/ambientlab/kind-node-image")
IMAGE_REPO = "ambientlab/kind-node"
DAEMON_FLAGS = (
    "--storage-driver=overlay2",
    "--iptables=false",
    "--ip6tables=false",
    "--ip-forward=false",
    "--bridge=none",
)
START_TIMEOUT = 60.0


class EngineUnavailable(RuntimeError):
    """dockerd, the docker CLI or debootstrap cannot be used here (the reason is the text)."""


def docker_cli() -> str | None:
    """The docker CLI: Debian's docker.io puts it in /usr/bin; a machine may have its own."""
    return shutil.which("docker")


def engine_unavailable() -> str | None:
    """Why a private dockerd cannot be started here, or None."""
    if os.geteuid() != 0:
        return "needs root to start dockerd"
    for tool, package in (("dockerd", "docker.io"), ("docker", "docker.io"),
                          ("debootstrap", "debootstrap")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    return None


# --------------------------------------------------------------------------- image


def debian_mirror() -> str:
    """The first Debian archive URI apt is configured with (deb822 or one-line format)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        uris, suites = None, ""
        for line in path.read_text().splitlines() + [""]:
            if not line.strip():
                if uris and SUITE in suites.split() and "security" not in uris:
                    return uris.split()[0]
                uris, suites = None, ""
            elif line.startswith("URIs:"):
                uris = line.split(":", 1)[1].strip()
            elif line.startswith("Suites:"):
                suites = line.split(":", 1)[1]
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"] and SUITE in parts:
                return next(p for p in parts[1:] if "://" in p)
    return "http://deb.debian.org/debian"


def image_key(mirror: str) -> str:
    """What decides the rootfs's content, hashed (the cache directory's name)."""
    doc = {"suite": SUITE, "mirror": mirror, "packages": PACKAGES, "variant": "minbase",
           "builder": IMAGE_BUILDER_VERSION}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def kind_node_rootfs(cache_dir: Path = CACHE_DIR) -> Path:
    """A tarball of the kind-node-like root filesystem, built once per key and cached.

    Concurrent builders are serialised by an flock on the cache directory, so two test
    sessions never debootstrap into the same place.
    """
    import fcntl

    mirror = debian_mirror()
    key = image_key(mirror)
    final = cache_dir / key / "rootfs.tar"
    if final.exists():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.exists():
            return final
        work = Path(tempfile.mkdtemp(prefix=f"build-{key}-", dir=cache_dir))
        try:
            root = work / "rootfs"
            res = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                 SUITE, str(root), mirror],
                capture_output=True, text=True, timeout=1800, check=False,
            )
            if res.returncode != 0:
                tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
                raise EngineUnavailable(f"debootstrap from {mirror} failed: {' | '.join(tail)}")
            # Nothing of the build host leaks in: apt lists and caches are not needed.
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                shutil.rmtree(root / junk, ignore_errors=True)
            tmp = work / "rootfs.tar"
            subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tmp), "."],
                           check=True, capture_output=True, timeout=600)
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp, final)
            (final.parent / "key.json").write_text(json.dumps(
                {"suite": SUITE, "mirror": mirror, "packages": PACKAGES}, indent=1) + "\n")
        finally:
            _remove_tree(work)
    return final


def _remove_tree(directory: Path) -> None:
    """Unmount what is mounted below `directory` (debootstrap mounts /proc and /sys in the
    target; a daemon leaves overlays), then delete it without crossing into any mount."""
    for mount in reversed(_mounts_under(directory)):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", str(directory)], capture_output=True,
                   check=False)


# --------------------------------------------------------------------------- daemon


class Dockerd:
    """A private dockerd (see the module docstring); `with Dockerd() as d: d.docker(...)`."""

    def __init__(self, *, base_dir: str | None = None) -> None:
        self.dir = Path(base_dir or tempfile.mkdtemp(prefix="ambientlab-dockerd-"))
        self.socket = self.dir / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "dockerd.log"

    @property
    def host(self) -> str:
        """The DOCKER_HOST / base_url of this daemon."""
        return f"unix://{self.socket}"

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        reason = engine_unavailable()
        if reason:
            raise EngineUnavailable(reason)
        argv = [
            "dockerd",
            f"--host={self.host}",
            f"--data-root={self.dir / 'data'}",
            f"--exec-root={self.dir / 'exec'}",
            f"--pidfile={self.dir / 'dockerd.pid'}",
            *DAEMON_FLAGS,
        ]
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept for the daemon's life
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineUnavailable(f"dockerd exited ({self.proc.returncode}): {self.log_tail()}")
            if self.socket.exists() and self.docker("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise EngineUnavailable(f"dockerd did not answer in {START_TIMEOUT:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def env(self) -> dict[str, str]:
        """The environment a docker client of this daemon runs with."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.dir / "client-config")  # no user contexts/config
        return env

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run the docker CLI against this daemon; raise with its stderr on failure."""
        cli = docker_cli()
        if cli is None:
            raise EngineUnavailable("the docker CLI is not installed (apt-get install docker.io)")
        res = subprocess.run([cli, *args], capture_output=True, env=self.env(), input=input,
                             timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args[:3])}... failed ({res.returncode}): "
                f"{res.stderr.decode(errors='replace').strip()}"
            )
        return res

    def import_image(self, rootfs: Path) -> str:
        """`docker import` the rootfs tarball once into this daemon; returns the tag."""
        tag = f"{IMAGE_REPO}:{rootfs.parent.name}"
        if self.docker("image", "inspect", tag, check=False).returncode != 0:
            self.docker("import", "--change", 'CMD ["sleep", "infinity"]', str(rootfs), tag,
                        timeout=600)
        return tag

    def pid_of(self, container: str) -> int:
        """The host PID of a running container's init process."""
        res = self.docker("inspect", "-f", "{{.State.Pid}}", container)
        return int(res.stdout.decode().strip())

    def close(self) -> None:
        """Remove the containers, stop the daemon, unmount and delete its directories."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.decode().split()
                if ids:
                    # A paused container must be unpaused before it can be killed cleanly.
                    self.docker("unpause", *ids, check=False, timeout=30)
                    self.docker("rm", "-f", *ids, check=False, timeout=60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        _remove_tree(self.dir)


def _mounts_under(directory: Path) -> list[str]:
    """Mount points at or below `directory` (overlay layers, shm, netns), in mount order."""
    prefix = str(directory.resolve())
    out: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                out.append(point)
    return out

