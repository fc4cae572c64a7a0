"""Mutation fuzzer for ambientctl's parsers and for the whole CLI (not a test; bounded in time).

Every bundle file is untrusted: a parser may reject it only with `ParseError` (a data
error naming file and line); any other exception is a crash. Seeds are the example
bundles' files; mutations are byte/line level (flip, delete, duplicate, truncate, splice
lines from another file) and JSON aware (deep nesting, a value swapped for another type).

    python benchmarks/fuzz.py --seconds 60            # parsers, then the CLI, 60 s each
    python benchmarks/fuzz.py --mode parsers --seconds 600 --seed 7
    python benchmarks/fuzz.py --mode cli --seconds 300

Prints inputs tried and one line per distinct crash signature (exception type + the
innermost ambientctl frame), with a reproducer written under --out (default /tmp/ambientctl-fuzz).
Exit 1 when a crash was found. `tests/test_fuzz_smoke.py` runs a few seconds of it in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ambientctl.errors import AmbientError, ParseError  # noqa: E402

EXAMPLES = [ROOT / "examples" / n for n in
            ("inpod-kind-ambient", "seed-kind-ambient", "mixed-kind-ambient")]


def _tokenised(ruleset: object) -> object:
    """Tokenise every rule of every chain, as a walk entering each chain would.

    Rules are stored as (line, text) and tokenised lazily when a walk enters their chain
    (`model.Chain.rules`), so a parser call alone never reaches the iptables tokenizer, the
    match parsers or nft's statement translation. The fuzzer forces them all.
    """
    for table in ruleset.tables:  # type: ignore[attr-defined]
        for chain in table.chains.values():
            chain.rules  # noqa: B018 - the property tokenises
    return ruleset


# `ipvsadm -Ln --exact` as ipvsadm 1.31 prints it (kube-proxy IPVS mode): the example
# bundles are not in IPVS mode, so this is the parser's seed.
_IPVSADM_SEED = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.1:443 rr
  -> 172.18.0.2:6443              Masq    1      0          0
TCP  10.96.0.10:53 rr persistent 10800
  -> 10.244.0.2:53                Masq    1      0          0
  -> 10.244.0.3:53                Masq    1      0          0
UDP  [fd00:10:96::a]:53 rr
  -> [fd00:10:244::2]:53          Masq    1      0          0
FWM  100 rr
"""


def _parsers() -> dict[str, Callable[[str, str], object]]:
    """File name -> a function that parses it fully (what the snapshot and walk call)."""
    from ambientctl.analyzers.parse import cluster as pc
    from ambientctl.analyzers.parse import host as ph
    from ambientctl.analyzers.parse import iproute as pr
    from ambientctl.analyzers.parse import ipset as ps
    from ambientctl.analyzers.parse import iptables as pt
    from ambientctl.analyzers.parse import ipvs as pv
    from ambientctl.analyzers.parse import nft as pn
    from ambientctl.analyzers.parse import nft_hooks as nh
    from ambientctl.analyzers.parse import ztunnel as pz

    def nft_json(text: str, path: str) -> object:
        pn.nft_sets(text, path)
        nh.parse_registrations(text, path)
        return _tokenised(pn.parse_nft_json(text, path))

    return {
        "pods.json": pc.parse_pods,
        "services.json": pc.parse_services,
        "namespaces.json": pc.parse_namespaces,
        "nodes.json": pc.parse_nodes,
        "endpointslices.json": pc.parse_endpointslices,
        "iptables-save.txt": lambda t, p: _tokenised(pt.parse_iptables_save(t, p)),
        "ip6tables-save.txt": lambda t, p: _tokenised(pt.parse_iptables_save(t, p)),
        "nft-ruleset.json": nft_json,
        "nft-ruleset.txt": lambda t, p: _tokenised(pn.parse_nft(t, p)),
        "ipset.txt": ps.parse_ipset,
        "ipvsadm.txt": pv.parse_ipvsadm,
        "ip-addr.txt": pr.parse_ip_addr,
        "ip-addr.json": pr.parse_ip_addr,
        "ip-neigh.txt": pr.parse_ip_neigh,
        "ip-neigh.json": pr.parse_ip_neigh,
        "ip-route.txt": lambda t, p: pr.parse_ip_route(t, p, family=4),
        "ip-route.json": lambda t, p: pr.parse_ip_route(t, p, family=4),
        "ip6-route.txt": lambda t, p: pr.parse_ip_route(t, p, family=6),
        "ip-rule.txt": lambda t, p: pr.parse_ip_rule(t, p, family=4),
        "ip-rule.json": lambda t, p: pr.parse_ip_rule(t, p, family=4),
        "ip6-rule.txt": lambda t, p: pr.parse_ip_rule(t, p, family=6),
        "ss-listen.txt": ph.parse_ss_listen,
        "ss-listen-udp.txt": lambda t, p: ph.parse_ss_listen(t, p, proto="udp"),
        "sysctl.txt": ph.parse_sysctl,
        "config_dump.json": lambda t, p: pz.parse_config_dump(t, p, "node"),
    }


def _seeds() -> dict[str, list[tuple[str, str]]]:
    """File name -> [(bundle-relative path, text)] from the example bundles."""
    out: dict[str, list[tuple[str, str]]] = {}
    for ex in EXAMPLES:
        for path in sorted(ex.rglob("*")):
            if path.is_file():
                out.setdefault(path.name, []).append(
                    (path.relative_to(ex).as_posix(), path.read_text(errors="replace")))
    out.setdefault("ipvsadm.txt", []).append(("nodes/n/ipvsadm.txt", _IPVSADM_SEED))
    # nft's text form (`nft list ruleset`): the bundles hold JSON, so the text parser is
    # seeded from the Istio golden rulesets kept as test fixtures.
    for path in sorted((ROOT / "tests" / "fixtures" / "raw" / "nft").glob("*.txt")):
        if "malformed" not in path.name:
            out.setdefault("nft-ruleset.txt", []).append(
                (f"nodes/n/{path.name}", path.read_text(errors="replace")))
    return out


# ---------------------------------------------------------------------------- mutations
_TYPES = ['5', '"x"', "null", "[]", "{}", "true", "-1", "1e400", '"10.0.0.1-fd00::1"']
_TOKENS = ["-j", "--nfmask", "0xzz", "--to-destination", "::", "10.0.0.0/33", "fd00::/129",
           "-1", "99999999999999999999", "\x00", "\t", "\\", '"', "{", "}", "[", "]",
           "table", "chain", "dev", "via", "lookup", "fwmark", "0x", "/", ":", "-"]


def mutate(text: str, rng: random.Random, others: list[str]) -> str:
    """One to three random edits of `text`."""
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(9)
        lines = text.split("\n")
        if op == 0 and text:  # flip a character
            i = rng.randrange(len(text))
            text = text[:i] + chr(rng.randrange(32, 127)) + text[i + 1:]
        elif op == 1 and lines:  # delete a line
            del lines[rng.randrange(len(lines))]
            text = "\n".join(lines)
        elif op == 2 and lines:  # duplicate a line
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            text = "\n".join(lines)
        elif op == 3 and text:  # truncate
            text = text[: rng.randrange(len(text))]
        elif op == 4 and others:  # splice a line from another file
            src = rng.choice(others).split("\n")
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(src))
            text = "\n".join(lines)
        elif op == 5:  # insert a token into a line
            if lines:
                i = rng.randrange(len(lines))
                words = lines[i].split(" ")
                words.insert(rng.randrange(len(words) + 1), rng.choice(_TOKENS))
                lines[i] = " ".join(words)
                text = "\n".join(lines)
        elif op == 6 and text:  # deep nesting
            i = rng.randrange(len(text))
            depth = rng.choice([50, 500, 5000, 100000])
            text = text[:i] + "[" * depth + "]" * depth + text[i:]
        elif op == 7:  # a JSON value of another type
            try:
                doc = json.loads(text)
            except (ValueError, RecursionError):
                continue
            _swap_type(doc, rng)
            text = json.dumps(doc, indent=rng.choice([None, 2]))
        elif op == 8 and text:  # replace a number with another
            i = rng.randrange(len(text))
            text = text[:i] + str(rng.choice([0, -1, 65536, 2**32, 2**64])) + text[i:]
    return text


def _swap_type(doc: object, rng: random.Random) -> None:
    node = doc
    for _ in range(rng.randint(1, 8)):
        if isinstance(node, dict) and node:
            key = rng.choice(list(node))
            if rng.random() < 0.3 or not isinstance(node[key], (dict, list)):
                node[key] = json.loads(rng.choice(_TYPES))
                return
            node = node[key]
        elif isinstance(node, list) and node:
            i = rng.randrange(len(node))
            if rng.random() < 0.3 or not isinstance(node[i], (dict, list)):
                node[i] = json.loads(rng.choice(_TYPES))
                return
            node = node[i]
        else:
            return


def _signature(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/ambientctl/" in f.filename]
    where = f"{frames[-1].filename.rsplit('ambientctl/', 1)[-1]}:{frames[-1].lineno}" \
        if frames else "?"
    return f"{type(exc).__name__} at {where}"


# ---------------------------------------------------------------------------- campaigns
def fuzz_parsers(seconds: float, rng: random.Random, out: Path,
                 per_parser: dict[str, int] | None = None) -> tuple[int, dict[str, str]]:
    """Mutate one seed file at a time and parse it fully (every rule tokenised); anything
    but `ParseError` is a crash. `per_parser` (when given) counts inputs per file name."""
    parsers, seeds = _parsers(), _seeds()
    names = [n for n in parsers if n in seeds]
    crashes: dict[str, str] = {}
    tried = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        name = rng.choice(names)
        rel, text = rng.choice(seeds[name])
        bad = mutate(text, rng, [t for _, t in rng.sample(seeds[name], 1)])
        tried += 1
        if per_parser is not None:
            per_parser[name] = per_parser.get(name, 0) + 1
        try:
            parsers[name](bad, rel)
        except ParseError:
            pass
        except Exception as exc:  # noqa: BLE001 - a crash is what we look for
            sig = f"{name}: {_signature(exc)}"
            if sig not in crashes:
                repro = out / f"parser-{len(crashes)}-{name}"
                repro.write_text(bad)
                crashes[sig] = str(repro)
    return tried, crashes


def fuzz_cli(seconds: float, rng: random.Random, out: Path) -> tuple[int, dict[str, str]]:
    """Mutate one file of an example bundle (manifest dropped: hashes would refuse it) and
    run trace and doctor in process; exit 5 or an escaping exception is a crash."""
    from ambientctl.cli import main

    crashes: dict[str, str] = {}
    tried = 0
    deadline = time.monotonic() + seconds
    with tempfile.TemporaryDirectory(prefix="ambientctl-fuzz-") as tmp:
        while time.monotonic() < deadline:
            ex = rng.choice(EXAMPLES)
            work = Path(tmp) / "b"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(ex, work)
            (work / "manifest.json").unlink()
            files = sorted(p for p in work.rglob("*") if p.is_file())
            for victim in rng.sample(files, rng.randint(1, 2)):
                victim.write_text(mutate(victim.read_text(errors="replace"), rng, []))
            argv = rng.choice([["doctor", "--bundle", str(work), "-o", "json"],
                               ["trace", "sleep", "productpage", "--bundle", str(work)],
                               ["trace", "sleep", "productpage", "--bundle", str(work),
                                "--plaintext"]])
            tried += 1
            err = io.StringIO()
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    code = main(argv)
                sig = None
                if code == 5:
                    last = [ln for ln in err.getvalue().splitlines() if "error" in ln][-1:]
                    sig = f"exit 5: {last[0][:160] if last else '?'}"
            except AmbientError:
                sig = None
            except Exception as exc:  # noqa: BLE001
                sig = f"escaped: {_signature(exc)}"
            if sig and sig not in crashes:
                repro = out / f"cli-{len(crashes)}"
                shutil.rmtree(repro, ignore_errors=True)
                shutil.copytree(work, repro)
                crashes[sig] = f"{repro} ({' '.join(argv[:3])})"
    return tried, crashes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--mode", choices=["parsers", "cli", "both"], default="both")
    ap.add_argument("--seconds", type=float, default=60.0, help="per mode")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", default="/tmp/ambientctl-fuzz")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    found = False
    for mode, fn in (("parsers", fuzz_parsers), ("cli", fuzz_cli)):
        if args.mode not in (mode, "both"):
            continue
        counts: dict[str, int] = {}
        if fn is fuzz_parsers:
            tried, crashes = fuzz_parsers(args.seconds, random.Random(seed), out, counts)
        else:
            tried, crashes = fn(args.seconds, random.Random(seed), out)
        print(f"{mode}: seed {seed}, {tried} inputs, {len(crashes)} crash signature(s)")
        if counts:
            print("  inputs per parser: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        for sig, repro in sorted(crashes.items()):
            print(f"  {sig}\n    reproducer: {repro}")
        found = found or bool(crashes)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
