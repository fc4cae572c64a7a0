"""The check catalogue keeps its promises: stable well-formed ids, a title, a severity, a
remediation, an area matching the id's hundred, and one docs/checks.md section per id."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ambientctl.analyzers.doctor import REGISTRY, catalogue, check
from ambientctl.analyzers.doctor.registry import RETIRED
from ambientctl.analyzers.findings import Severity

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "docs/checks.md").read_text()
AREA_OF_HUNDRED = {"1": "collection", "2": "legacy", "3": "inpod", "4": "node", "5": "waypoint"}
SECTION = re.compile(r'^<a id="(amb\d{3})"></a>\n### (AMB\d{3}) - (.+) \((error|warning|info)\)$',
                     re.MULTILINE)


def _sections() -> dict[str, tuple[str, str, str]]:
    """id -> (anchor, title, severity) of every docs section."""
    return {m.group(2): (m.group(1), m.group(3), m.group(4)) for m in SECTION.finditer(DOCS)}


def test_catalogue_is_not_empty_and_ids_are_well_formed() -> None:
    infos = catalogue()
    assert len(infos) >= 40
    ids = [c.id for c in infos]
    assert len(ids) == len(set(ids))
    for cid in ids:
        assert re.fullmatch(r"AMB\d{3}", cid), cid
        assert cid not in RETIRED


@pytest.mark.parametrize("cid", sorted(REGISTRY))
def test_check_has_title_severity_remediation_and_area(cid: str) -> None:
    info = REGISTRY[cid].info
    assert info.title and not info.title.endswith(".") and len(info.title) < 80
    assert isinstance(info.severity, Severity)
    assert len(info.remediation) > 20
    assert info.area == AREA_OF_HUNDRED[cid[3]]
    assert info.docs == f"docs/checks.md#{cid.lower()}"
    assert REGISTRY[cid].fn.__doc__, f"{cid}: the check function needs a docstring saying why"


@pytest.mark.parametrize("cid", sorted(REGISTRY))
def test_every_check_has_its_docs_section(cid: str) -> None:
    sections = _sections()
    assert cid in sections, f"docs/checks.md has no section for {cid}"
    anchor, title, severity = sections[cid]
    assert anchor == cid.lower()
    assert title == REGISTRY[cid].info.title
    assert severity == REGISTRY[cid].info.severity.value
    body = DOCS.split(f'<a id="{anchor}"></a>', 1)[1].split("<a id=", 1)[0]
    for part in ("**Means**", "**Evidence**", "**Fix**"):
        assert part in body, f"{cid}: section lacks {part}"
    assert "**Why" in body


def test_docs_have_no_section_for_an_unknown_check() -> None:
    assert set(_sections()) <= set(REGISTRY) | set(RETIRED)
    # every anchor is unique
    anchors = re.findall(r'<a id="(amb\d{3})"></a>', DOCS)
    assert len(anchors) == len(set(anchors))


def test_registering_a_used_or_malformed_id_is_refused() -> None:
    with pytest.raises(ValueError, match="already used"):
        check("AMB201", title="x", severity=Severity.ERROR, area="legacy", scope="node",
              remediation="x")
    with pytest.raises(ValueError, match="does not match"):
        check("AMB12", title="x", severity=Severity.ERROR, area="legacy", scope="node",
              remediation="x")
    with pytest.raises(ValueError, match="unknown area"):
        check("AMB999", title="x", severity=Severity.ERROR, area="elsewhere", scope="node",
              remediation="x")
    assert "AMB999" not in REGISTRY
