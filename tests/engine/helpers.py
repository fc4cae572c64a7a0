"""Plain helpers of the engine tests (the fixtures live in `tests.engine.fixtures`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
KIND_CLUSTER = "ambient"
ENGINE_TIMINGS: dict[str, float] = {}  # what the build and the collection cost (seconds)


def ambientctl(engine: Any, *args: str, kubeconfig: Path | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m ambientctl ARGS` against `engine` (DOCKER_HOST), from the repo root.

    Without `kubeconfig` the command sees no Kubernetes configuration at all.
    """
    env = engine.env()
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env["KUBECONFIG"] = str(kubeconfig) if kubeconfig else os.devnull
    return subprocess.run([sys.executable, "-m", "ambientctl", *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=timeout, check=False)
