"""A deterministic N-node in-pod ambient bundle, grown from the real in-pod example.

Why: the cluster-scale goals (issue 12) are set on 2..200 nodes with ~20 pods and ~5k
kube-proxy lines each; such bundles cannot be committed, so benchmarks and the smoke test
generate them. Every file starts as what the real tools printed in the in-pod lab
(`examples/inpod-kind-ambient`); the generator only renames and renumbers:

- nodes 0 and 1 are the example's `ambient-worker` / `ambient-worker2` (the pods a trace
  between `sleep` and `productpage` crosses stay where they are);
- node k >= 2 is a copy of `ambient-worker2` named `ambient-worker<k+1>`, node IP
  172.18.<k // 250>.<k % 250 + 4>, pod CIDR 10.244.<k + 1>.0/24 (every address of that node's
  files renumbered, so no two nodes own the same address);
- every node gets extra pods, copies of one of its own workload pods' netns with a new name,
  UID and IP (10.244.x.<20 + j>), listed in cluster/pods.json with their node;
- every node's `iptables-save.txt` is inflated with a kube-proxy rule set of `services` x
  `endpoints` (benchmarks/kube_proxy_dump.py: ~5k lines at 100 x 12);
- manifest.json is rewritten: one target per netns, one entry per file with its size and
  sha256, so the bundle verifies.

Known simplifications: the extra pods' host side (veth, /32 route) is not added to the
node's host files, and the kube-proxy Services are not in cluster/services.json (their
addresses do not collide with the example's).

    python benchmarks/scale_bundle.py OUT_DIR --nodes 50 [--pods 20] [--tar]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import shutil
import sys
import tarfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import kube_proxy_dump  # noqa: E402

TEMPLATE = ROOT / "examples" / "inpod-kind-ambient"
TEMPLATE_NODES = ("ambient-worker", "ambient-worker2")
CLONED_NODE = "ambient-worker2"  # node k >= 2 is a renumbered copy of this one
CLONED_NODE_IP = "172.18.0.3"
CLONED_NODE_NET = "10.244.1."
# per template node: the workload pod whose netns the extra pods copy
EXTRA_FROM = {"ambient-worker": "notsleep-6d6c8669b5-pngxg",
              "ambient-worker2": "reviews-v1-6494d87c7b-zrpks"}


def node_name(k: int) -> str:
    """The k-th node's name (0-based): the example's two, then ambient-worker3, ..."""
    return TEMPLATE_NODES[k] if k < len(TEMPLATE_NODES) else f"ambient-worker{k + 1}"


def _sub_ip(text: str, old: str, new: str) -> str:
    """Replace one IPv4 address (or prefix ending in '.') as a whole token."""
    if old.endswith("."):
        return re.sub(r"(?<![0-9.])" + re.escape(old), new, text)
    return re.sub(r"(?<![0-9.])" + re.escape(old) + r"(?![0-9])", new, text)


def _sub_name(text: str, old: str, new: str) -> str:
    return re.sub(re.escape(old) + r"(?![0-9a-z-])", new, text)


class _Writer:
    """Writes files and remembers (target, spec template entry) for the manifest."""

    def __init__(self, out: Path, template_entries: dict[str, dict]) -> None:
        self.out = out
        self.template_entries = template_entries
        self.entries: list[dict] = []
        self.targets: list[dict] = []

    def put(self, rel: str, data: bytes, like: str | None, target: str | None) -> None:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        base = copy.deepcopy(self.template_entries.get(like or "", {}))
        if not base:
            return  # cluster/ files are not manifest entries in the example either
        base.update(path=rel, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        if target:
            base["target"] = target
        self.entries.append(base)


def generate(out: Path, nodes: int, pods: int = 20, services: int = 100,
             endpoints: int = 12) -> Path:
    """Write an `nodes`-node bundle directory at `out` (replaced); return `out`."""
    if nodes < 2:
        raise ValueError("at least the example's 2 nodes")
    if nodes > 250:
        raise ValueError("pod CIDRs 10.244.<k+1>.0/24 allow at most 250 nodes")
    if out.exists():
        shutil.rmtree(out)
    manifest = json.loads((TEMPLATE / "manifest.json").read_text())
    t_entries = {e["path"]: e for e in manifest["entries"] if e.get("path")}
    t_targets = {t["dir"]: t for t in manifest["targets"]}
    w = _Writer(out, t_entries)
    kube = kube_proxy_dump.generate(services, endpoints)
    from bench_trace import inflate  # the same merge bench_trace uses

    pods_doc = json.loads((TEMPLATE / "cluster" / "pods.json").read_text())
    nodes_doc = json.loads((TEMPLATE / "cluster" / "nodes.json").read_text())
    t_pods = {p["metadata"]["name"]: p for p in pods_doc["items"]}
    t_node = next(n for n in nodes_doc["items"] if n["metadata"]["name"] == CLONED_NODE)
    new_pods: list[dict] = list(pods_doc["items"])
    new_nodes: list[dict] = list(nodes_doc["items"])

    for k in range(nodes):
        name = node_name(k)
        src_node = name if k < len(TEMPLATE_NODES) else CLONED_NODE
        net = CLONED_NODE_NET if k >= len(TEMPLATE_NODES) else None
        new_net = f"10.244.{k + 1}."
        node_ip = f"172.18.{k // 250}.{k % 250 + 4}"

        # Bound now (defaults), not at call time: the closure belongs to this iteration.
        def renumber(text: str, net: str | None = net, node_ip: str = node_ip,
                     new_net: str = new_net, name: str = name) -> str:
            if net is None:
                return text
            text = _sub_ip(text, CLONED_NODE_IP, node_ip)
            text = _sub_ip(text, net, new_net)
            return _sub_name(text, CLONED_NODE, name)

        src_root = TEMPLATE / "nodes" / src_node
        for f in sorted(src_root.rglob("*")):
            if not f.is_file():
                continue
            rel_src = f.relative_to(TEMPLATE).as_posix()
            rel = f"nodes/{name}/" + f.relative_to(src_root).as_posix()
            text = renumber(f.read_text())
            if rel.endswith("host/iptables-save.txt") and "*nat" in text:
                text = inflate(text, kube)
            tdir = rel_src.rsplit("/", 1)[0]
            target = t_targets.get(tdir)
            if target is not None and net is not None:
                t = copy.deepcopy(target)
                t["id"] = _sub_name(t["id"], CLONED_NODE, name)
                t["node"] = name
                t["dir"] = rel.rsplit("/", 1)[0]
                if t["dir"] not in {x["dir"] for x in w.targets}:
                    w.targets.append(t)
                tid = t["id"]
            else:
                if target is not None and target["dir"] not in {x["dir"] for x in w.targets}:
                    w.targets.append(copy.deepcopy(target))
                tid = target["id"] if target else None
            w.put(rel, text.encode(), rel_src, tid)
        if net is not None:
            n = copy.deepcopy(t_node)
            n["metadata"]["name"] = name
            n["metadata"]["labels"]["kubernetes.io/hostname"] = name
            n["spec"]["podCIDR"] = f"{new_net}0/24"
            n["spec"]["podCIDRs"] = [f"{new_net}0/24"]
            n["status"]["addresses"] = [{"address": node_ip, "type": "InternalIP"},
                                        {"address": name, "type": "Hostname"}]
            new_nodes.append(n)
            for p in pods_doc["items"]:
                if p["spec"].get("nodeName") != CLONED_NODE:
                    continue
                q = json.loads(renumber(json.dumps(p)))
                q["metadata"]["name"] = _pod_name(p["metadata"]["name"], k)
                q["metadata"]["uid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{q['metadata']['name']}"))
                q["spec"]["nodeName"] = name
                app = q["metadata"].get("labels", {}).get("app")
                if app and app != "ztunnel":  # selectors by app stay unique
                    q["metadata"]["labels"]["app"] = f"{app}-n{k:03d}"
                new_pods.append(q)
                _rename_pod_dir(w, out, name, p, q["metadata"]["name"])
        # extra pods: copies of one workload pod's netns, renumbered
        base_pod_name = EXTRA_FROM[src_node]
        base_pod = t_pods[base_pod_name]
        ns = base_pod["metadata"]["namespace"]
        base_ip = base_pod["status"]["podIP"]
        base_name = base_pod["metadata"]["name"] if net is None else _pod_name(base_pod_name, k)
        have = sum(1 for p in new_pods if p["spec"].get("nodeName") == name)
        base_dir = f"nodes/{name}/pods/{ns}/{base_name}"
        for j in range(max(0, pods - have)):
            pname = f"load-{k:03d}-{j:02d}"
            ip_prefix = new_net if net is not None else base_ip.rsplit(".", 1)[0] + "."
            pip = f"{ip_prefix}{20 + j}"
            old_ip = base_ip if net is None else renumber(base_ip)
            q = json.loads(_sub_ip(json.dumps(base_pod if net is None else
                                              json.loads(renumber(json.dumps(base_pod)))),
                                   old_ip, pip))
            q["metadata"]["name"] = pname
            q["metadata"]["uid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{pname}"))
            q["metadata"]["labels"] = {"app": f"load-{k}-{j}"}
            q["metadata"].pop("ownerReferences", None)
            q["metadata"].pop("generateName", None)
            q["spec"]["nodeName"] = name
            new_pods.append(q)
            for f in sorted((out / base_dir).iterdir()):
                rel = f"nodes/{name}/pods/{ns}/{pname}/{f.name}"
                data = _sub_ip(f.read_text(), old_ip, pip).encode()
                like = f"{base_dir}/{f.name}"
                like = next((e for e in w.entries if e["path"] == like), {})
                tid = f"pod/{ns}/{pname}"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(data)
                entry = copy.deepcopy(like)
                entry.update(path=rel, target=tid, size=len(data),
                             sha256=hashlib.sha256(data).hexdigest())
                w.entries.append(entry)
            t = copy.deepcopy(next(x for x in w.targets if x["dir"] == base_dir))
            t.update(id=f"pod/{ns}/{pname}", dir=f"nodes/{name}/pods/{ns}/{pname}",
                     pod={"namespace": ns, "name": pname})
            w.targets.append(t)

    _fix_config_dumps(w, out, new_pods, set(t_pods))
    cluster = out / "cluster"
    cluster.mkdir(parents=True, exist_ok=True)
    docs = {"pods.json": {**pods_doc, "items": new_pods},
            "nodes.json": {**nodes_doc, "items": new_nodes}}
    for f in sorted((TEMPLATE / "cluster").iterdir()):
        data = (json.dumps(docs[f.name], indent=1).encode() if f.name in docs
                else f.read_bytes())
        w.put(f"cluster/{f.name}", data, f"cluster/{f.name}", None)
    manifest["targets"] = w.targets
    manifest["entries"] = w.entries
    manifest["bundle_id"] = "sha256:" + hashlib.sha256(
        json.dumps(w.entries, sort_keys=True).encode()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


def _pod_name(template: str, k: int) -> str:
    """A template pod's name on node k: its last segment replaced (still DNS-1123)."""
    return template.rsplit("-", 1)[0] + f"-n{k:03d}"


def _rename_pod_dir(w: _Writer, out: Path, node: str, p: dict, new: str) -> None:
    """Move a copied pod's directory to its new name; fix its manifest entries/target."""
    ns, old = p["metadata"]["namespace"], p["metadata"]["name"]
    src = out / "nodes" / node / "pods" / ns / old
    dst = out / "nodes" / node / "pods" / ns / new
    src.rename(dst)
    old_dir, new_dir = f"nodes/{node}/pods/{ns}/{old}", f"nodes/{node}/pods/{ns}/{new}"
    for e in w.entries:
        if e["path"].startswith(old_dir + "/"):
            e["path"] = new_dir + e["path"][len(old_dir):]
            e["target"] = f"pod/{ns}/{new}"
    for t in w.targets:
        if t["dir"] == old_dir:
            t.update(dir=new_dir, id=f"pod/{ns}/{new}", pod={"namespace": ns, "name": new})


def _fix_config_dumps(w: _Writer, out: Path, pods: list[dict], template: set[str]) -> None:
    """Each node's ztunnel knows its own pods: a workload and an Up workloadState per pod
    the generator added (UIDs and IPs as in cluster/pods.json)."""
    for e in w.entries:
        if not e["path"].endswith("/ztunnel/config_dump.json"):
            continue
        node = e["path"].split("/")[1]
        path = out / e["path"]
        dump = json.loads(path.read_text())
        like = dump["workloads"][0]
        for p in pods:
            meta = p["metadata"]
            if p["spec"].get("nodeName") != node or meta["name"] in template \
                    or meta.get("labels", {}).get("app") == "ztunnel":
                continue
            wl = {**like, "uid": f"Kubernetes//Pod/{meta['namespace']}/{meta['name']}",
                  "workloadIps": [p["status"]["podIP"]], "name": meta["name"],
                  "namespace": meta["namespace"], "node": node,
                  "workloadName": meta["labels"].get("app", meta["name"]),
                  "canonicalName": meta["labels"].get("app", meta["name"])}
            dump["workloads"] = [x for x in dump["workloads"] if x.get("workloadIps") !=
                                 wl["workloadIps"]] + [wl]
            dump.setdefault("workloadState", {})[meta["uid"]] = {
                "connections": {"inbound": [], "outbound": []},
                "info": {"name": meta["name"], "namespace": meta["namespace"],
                         "serviceAccount": "default"}, "state": "Up"}
        for uid in [u for u, st in dump.get("workloadState", {}).items()
                    if st["info"]["name"] not in {p["metadata"]["name"] for p in pods
                                                  if p["spec"].get("nodeName") == node}]:
            del dump["workloadState"][uid]
        data = json.dumps(dump, indent=1).encode()
        path.write_bytes(data)
        e.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
        _fix_probe_ipset(w, out, node, [p for p in pods if p["spec"].get("nodeName") == node
                                        and p["metadata"].get("annotations", {}).get(
                                            "ambient.istio.io/redirection") == "enabled"])


def _fix_probe_ipset(w: _Writer, out: Path, node: str, pods: list[dict]) -> None:
    """The node's istio-inpod-probes-v4 set lists every enrolled pod (IP, UID comment)."""
    rel = f"nodes/{node}/host/ipset.txt"
    entry = next((e for e in w.entries if e["path"] == rel), None)
    if entry is None:
        return
    head = (out / rel).read_text().split("Members:\n")[0]
    members = [f'{p["status"]["podIP"]} comment "{p["metadata"]["uid"]}"' for p in pods]
    head = re.sub(r"Number of entries: \d+", f"Number of entries: {len(members)}", head)
    data = (head + "Members:\n" + "\n".join(members) + "\n").encode()
    (out / rel).write_bytes(data)
    entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())


def to_tar(bundle: Path, dest: Path, *, indexed: bool = True) -> Path:
    """The bundle as a .tar.gz with one top folder: by default what `collect -o X.tar.gz`
    writes (indexed, see ambientctl/bundle/tarindex.py); `indexed=False`: a plain
    single-stream tar.gz, as `tar czf` would make (what older ambientctl wrote)."""
    if indexed:
        from ambientctl.bundle.writer import write_tarball

        write_tarball(bundle, str(dest), top=bundle.name, mtime=0)
        return dest
    with tarfile.open(dest, "w:gz", compresslevel=6) as tar:
        tar.add(bundle, arcname=bundle.name)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--pods", type=int, default=20)
    ap.add_argument("--tar", action="store_true", help="also write OUT.tar.gz")
    args = ap.parse_args()
    generate(args.out, args.nodes, args.pods)
    files = [f for f in args.out.rglob("*") if f.is_file()]
    print(f"{args.out}: {args.nodes} nodes, {len(files):,} files, "
          f"{sum(f.stat().st_size for f in files) / 1e6:.1f} MB")
    if args.tar:
        print(to_tar(args.out, args.out.with_name(args.out.name + ".tar.gz")))


if __name__ == "__main__":
    main()
