"""Parse once per distinct content (`analyzers.parse.reuse`): equal answers, bounded.

Why: the loader hands a pod the parse of another pod's byte-identical file, relocated to
its own path. Every fact, rule and line it cites must then be exactly what parsing its own
file gives, for every kind of file a bundle holds; the cache must stay within its bounds
and never keep a failure.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from ambientctl import model
from ambientctl.analyzers import snapshot
from ambientctl.analyzers.parse import reuse
from ambientctl.analyzers.parse.host import parse_sysctl
from ambientctl.analyzers.parse.reuse import ContentCache, NotRelocatable, relocate
from ambientctl.errors import ParseError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import scale_bundle  # noqa: E402

_PLAIN = (str, int, float, bool, type(None), bytes, enum.Enum, ipaddress.IPv4Address,
          ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network,
          ipaddress.IPv4Interface, ipaddress.IPv6Interface)


def _flat(obj: Any) -> Any:
    """Everything a parsed result holds, as plain nested tuples: lazy containers listed,
    chains' rules tokenised, `compare=False` fields included (equality skips them)."""
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, model.SourceRef):
        return ("ref", obj.path, obj.line, obj.text)
    if isinstance(obj, Mapping):
        return ("map", tuple((_flat(k), _flat(v)) for k, v in obj.items()))
    if isinstance(obj, frozenset):
        return ("set", tuple(sorted(repr(_flat(x)) for x in obj)))
    if isinstance(obj, model.Chain):
        try:
            rules = _flat(obj.rules)
        except ParseError as exc:
            rules = ("error", exc.path, exc.line, exc.reason)
        fields = tuple(_flat(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                       if f.name not in ("tokenizer", "prebuilt", "raw_rules"))
        return ("chain", fields, tuple(obj.raw_rules), rules)
    if dataclasses.is_dataclass(obj):
        return (type(obj).__name__,
                tuple(_flat(getattr(obj, f.name)) for f in dataclasses.fields(obj)))
    if isinstance(obj, Sequence):
        return tuple(_flat(x) for x in obj)
    raise AssertionError(f"unexpected {type(obj).__name__} in a parsed result")


def _parsers() -> dict[str, list[Any]]:
    """File name -> the loader's parsers of it (the nft dump: also the one-decode path)."""
    out: dict[str, list[Any]] = {}
    for spec in snapshot.SPEC_TABLE:
        out.setdefault(spec.file, []).append(spec.parse)
    out.setdefault("nft-ruleset.json", []).append(snapshot._nft_doc_parts)
    return out


def _netns_files(root: Path) -> list[Path]:
    parsers = _parsers()
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name in parsers
                  and ("pods" in p.parts or "host" in p.parts))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scale_bundle.generate(tmp_path_factory.mktemp("reuse") / "b", 2)


@pytest.mark.parametrize("where", ["generated", "examples"])
def test_a_relocated_parse_is_the_parse_of_the_other_file(generated: Path, where: str) -> None:
    """For every netns file of a generated bundle and of every example, the result parsed
    from one path and relocated to another holds exactly what parsing it from the other
    path gives (rules tokenised, lazy maps listed, sources compared field by field)."""
    root = generated if where == "generated" else ROOT / "examples"
    parsers = _parsers()
    checked = relocated = 0
    for f in _netns_files(root):
        text = f.read_text(errors="replace")
        rel = str(f.relative_to(root))
        other = rel.replace("/", "/moved-", 1)
        for parse in parsers[f.name]:
            try:
                first = parse(text, rel)
            except ParseError:
                continue
            checked += 1
            try:
                moved = relocate(first, rel, other)
            except NotRelocatable:
                continue
            relocated += 1
            assert _flat(moved) == _flat(parse(text, other)), f"{rel} via {parse.__name__}"
            assert _flat(first) == _flat(parse(text, rel)), "relocating changed the original"
    assert checked > 50 and relocated > 0.9 * checked


def test_a_hit_is_an_equal_result_citing_its_own_file() -> None:
    """A text is kept from its second parse on; later files of the same name and text get
    an equal result that cites them."""
    cache = ContentCache()
    text = "net.ipv4.ip_forward = 1\nnet.ipv4.conf.all.rp_filter = 0\n"
    a = cache.parse(parse_sysctl, text, "nodes/n1/pods/ns/a/sysctl.txt")
    cache.parse(parse_sysctl, text, "nodes/n1/pods/ns/x/sysctl.txt")
    assert (cache.stats()["hits"], cache.stats()["misses"], len(cache)) == (0, 2, 1)
    b = cache.parse(parse_sysctl, text, "nodes/n1/pods/ns/b/sysctl.txt")
    assert cache.stats()["hits"] == 1
    assert b is not a
    assert b["net.ipv4.ip_forward"].source == model.SourceRef(
        "nodes/n1/pods/ns/b/sysctl.txt", 1, "net.ipv4.ip_forward = 1")
    assert a["net.ipv4.ip_forward"].source.path == "nodes/n1/pods/ns/a/sysctl.txt"
    assert dict(b) == dict(parse_sysctl(text, "nodes/n1/pods/ns/b/sysctl.txt"))
    # The file name is part of the key: the same text under another name is parsed anew.
    cache.parse(parse_sysctl, text, "nodes/n1/pods/ns/c/sysctl-copy.txt")
    assert cache.stats()["misses"] == 3


def test_the_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    cache = ContentCache(max_entries=3, max_chars=10_000, max_text=100)
    texts = [f"net.a{i} = {i}\n" for i in range(5)]
    for i, t in enumerate(texts):
        cache.parse(parse_sysctl, t, f"p{i}/sysctl.txt")
        cache.parse(parse_sysctl, t, f"o{i}/sysctl.txt")  # seen twice: kept
        cache.parse(parse_sysctl, texts[0], "q/sysctl.txt")  # keeps texts[0] recent
    assert len(cache) == 3
    hits = cache.stats()["hits"]
    cache.parse(parse_sysctl, texts[0], "r/sysctl.txt")
    cache.parse(parse_sysctl, texts[1], "r/sysctl.txt")
    # texts[0] stayed (recently used); texts[1] was dropped (5 kept for 3 places)
    assert cache.stats()["hits"] == hits + 1
    big = "net.x = " + "1" * 200 + "\n"
    for _ in range(3):
        cache.parse(parse_sysctl, big, "p/sysctl.txt")
    assert cache.stats()["skipped"] == 3 and big not in {k[2] for k in cache._entries}
    small = ContentCache(max_entries=100, max_chars=40, max_text=100)
    for i, t in enumerate(texts):
        for name in ("p", "o"):
            small.parse(parse_sysctl, t, f"{name}{i}/sysctl.txt")
    assert small.chars <= 40 and len(small) == 40 // len(texts[0])


def test_a_text_seen_once_is_not_kept() -> None:
    """Most of a pod's files are its own (addresses, routes): parsed once, not kept."""
    cache = ContentCache()
    for i in range(50):
        cache.parse(parse_sysctl, f"net.a = {i}\n", f"p{i}/sysctl.txt")
    assert len(cache) == 0 and cache.chars == 0 and cache.stats()["misses"] == 50


def test_a_failure_is_not_kept_and_names_each_file() -> None:
    cache = ContentCache()
    for name in ("a", "b"):
        with pytest.raises(ParseError) as got:
            cache.parse(parse_sysctl, "not a sysctl line\n", f"{name}/sysctl.txt")
        assert got.value.path == f"{name}/sysctl.txt"
    assert len(cache) == 0 and cache.stats()["hits"] == 0


def _lazy(text: str, path: str) -> object:
    return model.Chain("filter", "X", None, model.SourceRef(path), (), tokenizer=lambda *a: None)


def test_a_result_that_cannot_be_relocated_is_parsed_for_each_file() -> None:
    cache = ContentCache()
    got = [cache.parse(_lazy, "t", f"{name}/f") for name in "abcd"]
    assert [x.source.path for x in got] == ["a/f", "b/f", "c/f", "d/f"]  # type: ignore[attr-defined]
    assert cache.stats()["hits"] == 0 and len(cache) == 0


def test_the_loader_parses_identical_pod_files_once(generated: Path) -> None:
    """Through the snapshot, the pods' identical dumps are cache hits, and each pod's
    facts cite its own files."""
    from ambientctl.bundle.load import load_snapshot

    reuse.CACHE.clear()
    snap = load_snapshot(str(generated))
    pods = [ns for ns in snap.namespaces() if ns.pod is not None]
    for ns in pods:
        assert ns.problems == ()
        assert ns.sysctls["net.ipv4.ip_forward"].source.path == f"{ns.dir}/sysctl.txt"
        assert all(t.source.path.startswith(ns.dir + "/") for t in ns.tables())
    stats = reuse.CACHE.stats()
    assert len(pods) >= 40 and stats["hits"] >= 4 * len(pods)


def test_equal_rule_texts_share_their_tokens_within_bounds(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """A rule text tokenised once gives the same tokens to every chain that holds it, each
    `Rule` citing its own file, line and position; the store keeps `TOKENS_KEPT` texts and
    never an error."""
    from ambientctl.analyzers.parse import iptables as pt

    monkeypatch.setattr(pt, "_TOKENS", type(pt._TOKENS)())
    monkeypatch.setattr(pt, "TOKENS_KEPT", 2)
    text = "-A ISTIO_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff"
    dump = f"*mangle\n:PREROUTING ACCEPT [0:0]\n:ISTIO_PRERT - [0:0]\n{text}\nCOMMIT\n"
    a = pt.parse_iptables_save(dump, "a/iptables-save.txt").tables[0].chains["ISTIO_PRERT"]
    b = pt.parse_iptables_save("\n" + dump, "b/iptables-save.txt").tables[0].chains["ISTIO_PRERT"]
    (ra,), (rb,) = a.rules, b.rules
    assert ra.matches is rb.matches and ra.target == rb.target == "CONNMARK"
    assert (ra.source, rb.source) == (model.SourceRef("a/iptables-save.txt", 4, text),
                                      model.SourceRef("b/iptables-save.txt", 5, text))
    pt._TOKENS.clear()
    assert pt.tokenize_rule("c/f", a, 1, 4, text) == dataclasses.replace(
        ra, source=model.SourceRef("c/f", 4, text))  # a fresh tokenising agrees
    for i in range(5):
        pt.tokenize_rule("c/f", a, 1, 1, f"-A X -j MARK --set-mark {i}")
    assert len(pt._TOKENS) == 2
    for name in ("d/f", "e/f"):
        with pytest.raises(ParseError) as got:
            pt.tokenize_rule(name, a, 1, 7, "-A X ! ")
        assert (got.value.path, got.value.line) == (name, 7)
    assert "-A X ! " not in pt._TOKENS


def test_the_same_path_again_gets_fresh_lazy_containers() -> None:
    """Another bundle (or a re-parse after eviction) with the same file at the same path:
    an equal result, but chains built through the first are not built in the second."""
    from ambientctl.analyzers.parse.iptables import parse_iptables_save

    cache = ContentCache()
    dump = "*nat\n:PREROUTING ACCEPT [0:0]\n:X - [0:0]\n-A X -j RETURN\nCOMMIT\n"
    path = "nodes/n/host/iptables-save.txt"
    first = cache.parse(parse_iptables_save, dump, path)
    cache.parse(parse_iptables_save, dump, path)  # kept from here on
    first.tables[0].chains["X"].rules  # noqa: B018
    again = cache.parse(parse_iptables_save, dump, path)
    assert cache.stats()["hits"] == 1
    assert again.tables[0].chains.built == 0 and first.tables[0].chains.built == 1
    assert _flat(again) == _flat(first)
