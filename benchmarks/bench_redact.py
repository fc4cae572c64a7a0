"""Time the redaction text pass on the worst realistic node dump (not a timed test).

    python3 benchmarks/bench_redact.py [services] [endpoints]

Generates kube-proxy's `iptables-save` for `services` x `endpoints` (default 10,000 x 15,
~630k lines, docs/perf-reliability.md 1.4), registers the Service and namespace names the
cluster files would give, and times `Redactor.dump()` over it: every address mapped by the
keyed prefix-preserving map, every name token, every comment as free text.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ambientctl.bundle.redact import Redactor  # noqa: E402
from benchmarks.kube_proxy_dump import generate  # noqa: E402


def main() -> None:
    services = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    endpoints = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    text = generate(services, endpoints)
    red = Redactor(os.urandom(32))
    for i in range(services):
        red.add_name(f"svc-{i}", "service")
    red.add_name("ns-bench", "namespace")
    red.finish_names()
    t0 = time.perf_counter()
    out = red.dump(text)
    dt = time.perf_counter() - t0
    print(f"{len(text.splitlines())} lines, {len(text) / 1e6:.1f} MB: {dt:.2f} s, "
          f"{len(red.ips)} addresses mapped, output {len(out) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
