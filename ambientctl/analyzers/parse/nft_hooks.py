"""Which base chains the kernel really entered a hook with, and in which order.

`iptables-save` prints every built-in chain of a table (`:INPUT ACCEPT [0:0]`) even where
iptables-nft never created it; the kernel only runs the chains that exist in nftables
(`nft list ruleset`). And among chains of EQUAL priority at one hook the kernel runs the
most recently registered first: `nf_hook_entries_grow()` inserts a new hook in front of
the first existing entry whose priority is not lower than its own (net/netfilter/core.c),
and nf_nat's chain list (`nf_nat_register_fn`) is kept the same way.

`nft -j list ruleset` (every netns of a bundle: `nft-ruleset.json`) carries the handles
that tell the order: a table's handle is drawn from one counter per netns, a chain's from
one counter per table (`nf_tables_newtable`/`nf_tables_newchain`), so two chains of the
same table are ordered exactly by their handles; chains of different tables are ordered by
the tables' handles, which holds when each chain was created with its table (what
iptables-nft and Istio's nft backend do) - the walk says it assumed so.

This module reads only what ordering needs (family, table, chain, hook, priority,
handles) from the JSON; rules are parsed elsewhere (`parse.nft`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from ambientctl import model
from ambientctl.analyzers.parse.nft import MERGE_KEY
from ambientctl.errors import ParseError


def parse_registrations(text: str, path: str) -> Mapping[tuple[str, str, str], model.ChainRegistration]:
    """`nft -j list ruleset` -> {(family, table, chain): registration} for base chains only.

    Tables written by iptables-nft are included (that is the point: they are the chains
    iptables-save cannot tell apart from phantom built-ins). A text dump (no handles)
    returns an empty mapping: the caller treats that as "not collected". Per-table
    listings (`nft-tables.jsonl`, by name) are merged first (`parse.nft`).
    """
    if path.endswith(".jsonl"):
        from ambientctl.analyzers.parse.nft import merge_table_listings

        return registrations_from_doc(merge_table_listings(text, path), path)
    if text.lstrip()[:1] != "{":
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(path, exc.lineno, f"not JSON: {exc.msg}") from None
    return registrations_from_doc(doc, path)


def registrations_from_doc(doc: object, path: str
                           ) -> Mapping[tuple[str, str, str], model.ChainRegistration]:
    """`parse_registrations` of an already-decoded document (the loader decodes once)."""
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ParseError(path, 1, 'no "nftables" array: not `nft -j list ruleset` output')
    table_handles: dict[tuple[str, str], int] = {}
    chains: list[dict[str, object]] = []
    merged: object = None
    for item in items:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("metainfo"), dict):
            merged = item["metainfo"].get(MERGE_KEY)
        if "table" in item and isinstance(item["table"], dict):
            t = item["table"]
            if isinstance(t.get("handle"), int):
                table_handles[(str(t.get("family")), str(t.get("name")))] = t["handle"]
        elif "chain" in item and isinstance(item["chain"], dict) and item["chain"].get("hook"):
            chains.append(item["chain"])
    table_order: Mapping[tuple[str, str], int] = table_handles
    if isinstance(merged, dict):
        table_order = _merged_order(merged.get("order"), table_handles)
    found: dict[tuple[str, str, str], model.ChainRegistration] = {}
    for c in chains:
        family, table, name = str(c.get("family")), str(c.get("table")), str(c.get("name"))
        prio = c.get("prio")
        handle = c.get("handle")
        found[(family, table, name)] = model.ChainRegistration(
            family=family,
            table=table,
            chain=name,
            hook=str(c.get("hook")),
            priority=prio if isinstance(prio, int) else None,
            table_handle=table_handles.get((family, table)),
            table_order=table_order.get((family, table)),
            chain_handle=handle if isinstance(handle, int) else None,
            source=model.SourceRef(path),
        )
    return found


def _merged_order(order: object, handles: Mapping[tuple[str, str], int]
                  ) -> Mapping[tuple[str, str], int]:
    """A per-table collection's tables -> their position in the kernel's table list.

    Only the tables listed in full carry a handle (`parse.nft.merge_table_listings`); the
    list `nft list chains` printed is in the same order as the handles (both are creation
    order), so positions order tables exactly as handles would. That is checked against
    the handles that are known: if they disagree, no order is claimed (empty mapping: the
    walk then says equal priorities cannot be ordered).
    """
    if not isinstance(order, list):
        return {}
    pos = {(str(t[0]), str(t[1])): i for i, t in enumerate(order)
           if isinstance(t, list) and len(t) == 2}
    known = sorted((h, pos[t]) for t, h in handles.items() if t in pos)
    if [p for _, p in known] != sorted(p for _, p in known):
        return {}
    return pos


def rule_positions(text: str) -> dict[tuple[str, str, int], tuple[str, int]]:
    """`nft -j list ruleset` -> {(family, table, rule handle): (chain, 1-based position)}.

    Rule handles are unique per table; a rule's position in its chain is its order in the
    listing (`nft list` prints rules in evaluation order), which is the position
    `iptables-save` gives the same rule. This is how a kernel trace (`nft -a monitor
    trace` names rules by handle) is compared with the simulator's positions.
    """
    doc = json.loads(text)
    counts: dict[tuple[str, str, str], int] = {}
    out: dict[tuple[str, str, int], tuple[str, int]] = {}
    for item in doc.get("nftables", []):
        r = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(r, dict):
            continue
        key = (str(r["family"]), str(r["table"]), str(r["chain"]))
        counts[key] = counts.get(key, 0) + 1
        out[(key[0], key[1], int(r["handle"]))] = (key[2], counts[key])
    return out
