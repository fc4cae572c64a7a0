"""Hostile and large `.tar.gz` bundles: peak memory and wall time of the whole CLI (not a test).

Builds, in a temporary directory, from an example bundle:

- `bomb.tar.gz`: the example with one node's `iptables-save.txt` replaced by a file of
  `--bomb-mib` MiB (default 2048) of one repeated comment line: a few MB compressed;
- `reversed.tar.gz` / `sorted.tar.gz`: the example plus `--members` (default 5000) extra
  small files under `extra/`, stored in reverse / sorted order;
- the gzip level figure: time and size of writing the example tarball at levels 1..9.

Then runs `ambientctl doctor --bundle X` on each with `/usr/bin/time -v` and prints wall
time, peak RSS and exit code. `--ulimit-mib` bounds the address space of each run (so a
reader that does hold the bomb in memory fails with MemoryError instead of swapping).

    python benchmarks/bench_bundle_read.py [--bomb-mib 2048 --members 5000 --ulimit-mib 6144]
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "inpod-kind-ambient"


def _add_tree(tar: tarfile.TarFile, root: Path, top: str, skip: tuple[str, ...] = ()) -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in skip:
            continue
        tar.add(str(path), arcname=f"{top}/{rel}")


def make_bomb(out: Path, mib: int) -> None:
    """The example bundle without its manifest, one iptables-save.txt of `mib` MiB."""
    victim = "nodes/ambient-worker/host/iptables-save.txt"
    line = b"# " + b"x" * 61 + b"\n"  # 64 bytes
    block = line * (1 << 14)  # 1 MiB
    with gzip.open(out, "wb", compresslevel=6) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        _add_tree(tar, EXAMPLE, "bomb", skip=("manifest.json", victim))
        info = tarfile.TarInfo(f"bomb/{victim}")
        info.size = mib << 20
        # Stream the member by hand (header, then 1 MiB blocks: already 512-aligned).
        header = info.tobuf(tar.format, tar.encoding, tar.errors)
        tar.fileobj.write(header)
        for _ in range(mib):
            tar.fileobj.write(block)
        tar.offset += len(header) + (mib << 20)


def make_many(out: Path, members: int, *, reverse: bool) -> None:
    """The example (no manifest) plus copies of one pod's directory up to `members` files,
    every member stored sorted or in reverse order (doctor reads and parses them all)."""
    pod = EXAMPLE / "nodes/ambient-worker/pods/default/sleep-7b85956664-z6qh7"
    files: list[tuple[str, Path]] = [
        (p.relative_to(EXAMPLE).as_posix(), p) for p in EXAMPLE.rglob("*")
        if p.is_file() and p.name != "manifest.json"]
    pod_files = sorted(p for p in pod.iterdir() if p.is_file())
    i = 0
    while len(files) < members:
        for p in pod_files:
            files.append((f"nodes/ambient-worker/pods/extra/copy-{i:05d}/{p.name}", p))
        i += 1
    files.sort(reverse=reverse)
    with gzip.open(out, "wb", compresslevel=6) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for rel, p in files:
            tar.add(str(p), arcname=f"many/{rel}")


def run(argv: list[str], ulimit_mib: int | None) -> tuple[float, int, int, str]:
    """(wall s, peak RSS KiB, exit code, last stderr line) of one CLI run."""
    prefix = f"ulimit -v {ulimit_mib * 1024}; " if ulimit_mib else ""
    cmd = prefix + "exec /usr/bin/time -v " + " ".join(
        [sys.executable, "-m", "ambientctl", *argv])
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines()
             if ln.startswith(("error:", "internal error:", "hint:"))]
    return wall, int(rss.group(1)) if rss else -1, proc.returncode, " | ".join(lines)[:200]


def gzip_levels(tmp: Path) -> None:
    from ambientctl.bundle.writer import write_tarball

    staging = tmp / "staging"
    shutil.copytree(EXAMPLE, staging)
    # Make it bigger (the 200-node bundle is ~100x the example): 20 copies of the nodes.
    for i in range(20):
        shutil.copytree(EXAMPLE / "nodes", staging / f"copies/c{i}")
    print(f"{'gzip level':>10} {'write s':>8} {'bytes':>12}")
    for level in (1, 3, 6, 9):
        out = tmp / f"level{level}.tar.gz"
        t0 = time.perf_counter()
        write_tarball(staging, str(out), top="x", mtime=0, compresslevel=level)
        print(f"{level:>10} {time.perf_counter() - t0:>8.2f} {out.stat().st_size:>12}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--bomb-mib", type=int, default=2048)
    ap.add_argument("--members", type=int, default=5000)
    ap.add_argument("--ulimit-mib", type=int, default=6144)
    ap.add_argument("--skip", default="", help="comma list of: bomb,many,gzip")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmpdir:
        tmp = Path(tmpdir)
        rows = []
        if "bomb" not in skip:
            bomb = tmp / "bomb.tar.gz"
            make_bomb(bomb, args.bomb_mib)
            print(f"bomb: {bomb.stat().st_size} bytes compressed, {args.bomb_mib} MiB member")
            for cmd in ("doctor", "trace"):
                argv = ["doctor", "--bundle", str(bomb)] if cmd == "doctor" else \
                    ["trace", "sleep", "productpage", "--bundle", str(bomb)]
                rows.append((f"bomb {cmd}", *run(argv, args.ulimit_mib)))
        if "many" not in skip:
            for order in ("sorted", "reversed"):
                path = tmp / f"{order}.tar.gz"
                make_many(path, args.members, reverse=order == "reversed")
                rows.append((f"{args.members} members {order}",
                             *run(["doctor", "--bundle", str(path)], args.ulimit_mib)))
        print(f"{'case':<28} {'wall s':>8} {'peak MiB':>9} {'exit':>5}  stderr")
        for name, wall, rss, rc, err in rows:
            print(f"{name:<28} {wall:>8.2f} {rss / 1024:>9.1f} {rc:>5}  {err}")
        if "gzip" not in skip:
            gzip_levels(tmp)


if __name__ == "__main__":
    main()
