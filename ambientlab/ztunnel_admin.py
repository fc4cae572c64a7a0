"""An emulated ztunnel admin API (localhost:15000) inside the lab's ztunnel pod netns.

What it stands for (istio-datapath.md §4.3): ztunnel's admin server answers
`GET /config_dump` on localhost:15000 in the ztunnel pod's OWN network namespace - the
netns `kubectl port-forward` and `nsenter --net=<ztunnel netns> curl` reach. The dump has
ztunnel's view of the mesh as istiod pushed it over xDS:

- `workloads`: every pod of the cluster (a list, as current ztunnel prints it; older
  ztunnels printed a map keyed by `network/ip`, which the analyzers accept too), with
  `uid` `Kubernetes//Pod/<ns>/<name>`, `workloadIps`, `protocol`, `node`, `name`,
  `namespace`, `serviceAccount`, `status`, ... `protocol` is what istiod derives from the
  pod object, NOT from the pod's netns (`setTunnelProtocol` in
  pilot/pkg/serviceregistry/ambient/workloads.go): HBONE when the pod is annotated
  `ambient.istio.io/redirection: enabled` or labelled `networking.istio.io/tunnel: http`,
  else TCP. That is why a pod whose netns lost its rules is still listed HBONE
  (istio/istio#61182) - the disagreement ambientctl flags.
- `services`: keyed by `/<vip>`, with `endpoints` keyed `<workload uid>:/<ip>`.
- `workloadState`: keyed by the Kubernetes pod UID, one entry per pod THIS ztunnel runs a
  proxy for (the in-mesh pods of its node), `state: Up`.
- `policies`, `certificates`: empty here (no authorization policies, no secrets).

The dump is built from the lab's `kubectl get -o json` shaped pod and service objects
(`config_dump`), written to a file, and served by `python -m ambientlab.ztunnel_admin serve
--dump FILE`, which re-reads the file on every request (a lab may rewrite it). The server
binds 127.0.0.1:15000 only and prints `ready` once it listens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ambientlab.netns import repo_env

__all__ = ["config_dump", "protocol_of", "serve", "serve_argv", "spawn_env", "write_dump"]

ADMIN_HOST = "127.0.0.1"
ADMIN_PORT = 15000
REDIRECTION = "ambient.istio.io/redirection"
TUNNEL_LABEL = "networking.istio.io/tunnel"
TRUST_DOMAIN = "cluster.local"


def protocol_of(pod: Mapping[str, Any]) -> str:
    """istiod's `TunnelProtocol` for a pod: HBONE or TCP (see the module docstring)."""
    meta = pod.get("metadata") or {}
    if (meta.get("annotations") or {}).get(REDIRECTION) == "enabled":
        return "HBONE"
    if (meta.get("labels") or {}).get(TUNNEL_LABEL) == "http":
        return "HBONE"
    return "TCP"


def _uid(ns: str, name: str) -> str:
    return f"Kubernetes//Pod/{ns}/{name}"


def _owner(pod: Mapping[str, Any]) -> tuple[str, str]:
    """(workloadName, workloadType): the Deployment behind a ReplicaSet, or the DaemonSet."""
    owners = (pod.get("metadata") or {}).get("ownerReferences") or []
    if not owners:
        return str(pod["metadata"]["name"]), "pod"
    kind, name = owners[0].get("kind"), str(owners[0].get("name"))
    if kind == "ReplicaSet":
        return name.rsplit("-", 1)[0], "deployment"
    return name, str(kind).lower()


def service_account(pod: Mapping[str, Any]) -> str:
    """The pod's service account (`spec.serviceAccountName`, else `default`)."""
    return str((pod.get("spec") or {}).get("serviceAccountName") or "default")


def workload(pod: Mapping[str, Any]) -> dict[str, Any]:
    """One `workloads[]` entry, in ztunnel's field names."""
    meta, status = pod["metadata"], pod.get("status") or {}
    labels = meta.get("labels") or {}
    name, kind = _owner(pod)
    ips = [p["ip"] for p in status.get("podIPs") or []] or [status["podIP"]]
    out: dict[str, Any] = {
        "uid": _uid(meta["namespace"], meta["name"]),
        "workloadIps": ips,
        "protocol": protocol_of(pod),
        "name": meta["name"],
        "namespace": meta["namespace"],
        "trustDomain": TRUST_DOMAIN,
        "serviceAccount": service_account(pod),
        "workloadName": name,
        "workloadType": kind,
        "canonicalName": labels.get("app") or name,
        "canonicalRevision": labels.get("version") or "latest",
        "node": (pod.get("spec") or {}).get("nodeName"),
        "status": "Healthy" if status.get("phase") == "Running" else "Unhealthy",
        "clusterId": "Kubernetes",
    }
    if labels.get(TUNNEL_LABEL) == "http":
        out["nativeTunnel"] = True
    return out


def _services(
    services: Iterable[Mapping[str, Any]], pods: list[Mapping[str, Any]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for svc in services:
        meta, spec = svc["metadata"], svc.get("spec") or {}
        selector = spec.get("selector") or {}
        hostname = f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
        ports = {str(p["port"]): int(p.get("targetPort") or p["port"]) for p in spec.get("ports") or []}
        endpoints: dict[str, Any] = {}
        for pod in pods:
            pm = pod["metadata"]
            labels = pm.get("labels") or {}
            if pm["namespace"] != meta["namespace"] or not selector:
                continue
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            uid = _uid(pm["namespace"], pm["name"])
            for ip in workload(pod)["workloadIps"]:
                endpoints[f"{uid}:/{ip}"] = {
                    "workloadUid": uid,
                    "service": f"{meta['namespace']}/{hostname}",
                    "address": f"/{ip}",
                    "port": dict(ports),
                }
        vips = [f"/{ip}" for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip]
        for vip in vips:
            out[vip] = {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "hostname": hostname,
                "vips": vips,
                "ports": dict(ports),
                "endpoints": endpoints,
                "subjectAltNames": [],
            }
    return out


def config_dump(
    pods: Iterable[Mapping[str, Any]], services: Iterable[Mapping[str, Any]], node: str
) -> dict[str, Any]:
    """ztunnel's `/config_dump` on `node`, derived from the cluster's pod/service objects."""
    running = [p for p in pods if (p.get("status") or {}).get("podIP")]
    workloads = sorted((workload(p) for p in running), key=lambda w: w["uid"])
    state: dict[str, Any] = {}
    for pod in running:
        meta = pod["metadata"]
        if (pod.get("spec") or {}).get("nodeName") != node or protocol_of(pod) != "HBONE":
            continue
        state[str(meta["uid"])] = {
            "connections": {"inbound": [], "outbound": []},
            "info": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "serviceAccount": service_account(pod),
            },
            "state": "Up",
        }
    return {
        "workloads": workloads,
        "services": _services(services, running),
        "policies": [],
        "certificates": [],
        "workloadState": state,
    }


def write_dump(path: str | os.PathLike[str], dump: Mapping[str, Any]) -> Path:
    """Write a dump as ztunnel prints it (2-space indented JSON)."""
    out = Path(path)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(dump, indent=2) + "\n")
    os.replace(tmp, out)
    return out


def serve_argv(dump_file: str | os.PathLike[str]) -> list[str]:
    """The argv that runs the admin server (start it inside the ztunnel pod's netns)."""
    return [sys.executable, "-m", "ambientlab.ztunnel_admin", "serve", "--dump", str(dump_file)]


def spawn_env() -> dict[str, str]:
    """The environment the server needs to import this package from the checkout."""
    return repo_env()


# --------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    dump_file: Path
    server_version = "ztunnel-admin-emulated"

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/config_dump":
            self._send(404, b"not found\n", "text/plain")
            return
        try:
            body = self.dump_file.read_bytes()
        except OSError as exc:
            self._send(500, f"{exc}\n".encode(), "text/plain")
            return
        self._send(200, body, "application/json")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(dump_file: Path) -> None:
    """Serve `dump_file` on 127.0.0.1:15000 until killed; print `ready` once listening."""
    with open("/proc/self/comm", "w") as fh:  # the comm `ss -p` shows: ztunnel's
        fh.write("ztunnel")
    handler = type("Handler", (_Handler,), {"dump_file": dump_file})
    server = ThreadingHTTPServer((ADMIN_HOST, ADMIN_PORT), handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ambientlab.ztunnel_admin")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve a config_dump file on 127.0.0.1:15000")
    s.add_argument("--dump", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        serve(args.dump)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
