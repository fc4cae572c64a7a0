"""Build the in-pod lab and collect example bundles from it with `ambientctl collect --local`.

    sudo python examples/make_inpod_examples.py            # both examples
    sudo python examples/make_inpod_examples.py mixed      # only one

Writes (replacing what is there):

* `examples/inpod-kind-ambient/`: today's in-pod ambient (Istio 1.24 "redirect" variant,
  DNS capture on): nodes ambient-worker / ambient-worker2, ambient pods sleep, notsleep,
  productpage, reviews, and the non-mesh pod outside/curl.
* `examples/mixed-kind-ambient/`: the same plus `legacy/httpbin`, a sidecar pod (istio-cni
  sidecar rules, emulated Envoy as uid 1337) next to the ambient pods.

Every file in them is what the real tools printed inside the lab's network namespaces
(`ambientlab.inpod.InpodLab`); the cluster files come from `InpodLab.write_cluster`. The
lab is torn down afterwards, even on failure.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ambientlab.inpod import InpodLab  # noqa: E402

EXAMPLES = {
    "inpod": ("inpod-kind-ambient", False),
    "mixed": ("mixed-kind-ambient", True),
}


def make(name: str, mixed: bool, variant: str = "redirect") -> Path:
    """Build the lab, collect it into examples/<name>/, tear the lab down."""
    out = ROOT / "examples" / name
    with InpodLab(variant=variant, mixed=mixed) as lab, tempfile.TemporaryDirectory() as tmp:
        targets = lab.write_targets(Path(tmp) / "targets.json")
        cluster = lab.write_cluster(Path(tmp) / "cluster")
        staging = Path(tmp) / "bundle"
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "ambientctl",
                "collect",
                "--local",
                "--targets",
                str(targets),
                "--cluster-dir",
                str(cluster),
                "-o",
                str(staging),
                "-q",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise SystemExit(f"collect failed ({res.returncode}): {res.stderr.strip()}")
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(staging, out)
    return out


def main(argv: list[str]) -> int:
    """Make the examples named on the command line (default: all)."""
    wanted = argv or list(EXAMPLES)
    for key in wanted:
        if key not in EXAMPLES:
            raise SystemExit(f"unknown example {key!r}; choose from {', '.join(EXAMPLES)}")
        name, mixed = EXAMPLES[key]
        print(make(name, mixed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
