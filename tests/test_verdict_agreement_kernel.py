"""trace's verdict and doctor never disagree (issue: from path to diagnosis).

For every fault the kernel labs inject, each pair the labs replay is either as intended or
NOT as intended with a culprit that names a check doctor raises on the same bundle (the
root of its incident); a fault that changes a path makes at least one pair NOT as intended;
a healthy lab gives `as_intended: true` for every pair.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ambientctl.analyzers.doctor import diagnose
from ambientctl.analyzers.doctor.incidents import group
from ambientctl.analyzers.selectors import resolve
from ambientctl.analyzers.trace import Tracer
from ambientctl.analyzers.verdict import judge
from ambientctl.loading import load_snapshot
from ambientlab.inpod import KUBELET_UID

PP_IP = "10.244.1.7"
SEED_PAIRS = [("sleep", "productpage", None, False), ("sleep", "productpage", None, True),
              ("notsleep", "details", None, False)]
INPOD_PAIRS = [("sleep", "productpage", None, False), ("curl", "productpage", None, False),
               ("curl", PP_IP, 9080, False), ("node/ambient-worker2", PP_IP, 9080, False),
               ("node/ambient-worker2", PP_IP, 9080, "kubelet"),
               ("sleep", "httpbin", None, False), ("httpbin", "productpage", None, False)]
# faults that change no traced path (doctor still flags them): pod readiness, a stale copy
NO_PATH_EFFECT = {"sidecar-in-ambient-namespace", "nft-and-iptables-both"}


def _judge_all(bundle: Path, pairs: list[tuple[str, str, int | None, object]]) -> list[tuple]:
    snap = load_snapshot(str(bundle))
    report = diagnose(snap)
    raised = {f.check_id for f in report.findings}
    roots = {report.findings[i.root].check_id for i in group(report.findings)}
    out = []
    for src, dst, port, how in pairs:
        plain = how is True
        uid = KUBELET_UID if how == "kubelet" else None
        t = Tracer(snap).trace(resolve(snap, src, role="source"),
                               resolve(snap, dst, role="destination", port=port),
                               plaintext=plain, uid=uid)
        out.append((f"{src}->{dst}{' --plaintext' if plain else ''}{f' --uid {uid}' if uid else ''}",
                    judge(snap, t, plaintext=plain, uid=uid, report=report), raised, roots))
    return out


def _assert_agree(fault: str | None, judged: list[tuple]) -> int:
    off = 0
    for pair, v, raised, roots in judged:
        if fault is None:
            assert v.as_intended, f"healthy {pair}: {v.text}"
            continue
        if not v.as_intended:
            off += 1
            assert v.culprit is not None and v.culprit.check in raised, \
                f"{fault} {pair}: culprit {v.culprit} not raised by doctor ({sorted(raised)})"
            assert v.culprit.check in roots, f"{fault} {pair}: {v.culprit.check} is not a root"
            assert v.culprit.step is not None
    if fault is not None and fault not in NO_PATH_EFFECT:
        assert off, f"{fault}: no traced pair left the intended path"
    return off


@pytest.mark.kernel
def test_seed_lab_verdicts_agree_with_doctor(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ambientlab.faults import FAULTS

    lab.collect(tmp_path / "healthy", check=True)
    _assert_agree(None, _judge_all(tmp_path / "healthy", SEED_PAIRS))
    for fault in FAULTS:
        with lab.injected(fault):
            lab.collect(tmp_path / fault, check=True)
        _assert_agree(fault, _judge_all(tmp_path / fault, SEED_PAIRS))


@pytest.mark.kernel
@pytest.mark.parametrize("variant", ["redirect", "tproxy", "nft"])
def test_inpod_lab_verdicts_agree_with_doctor(variant: str, tmp_path: Path) -> None:
    from ambientlab.inpod import FAULTS, InpodLab

    with InpodLab(variant=variant, mixed=True) as lab:
        lab.collect(tmp_path / "healthy")
    _assert_agree(None, _judge_all(tmp_path / "healthy", INPOD_PAIRS))
    for fault in FAULTS:
        with InpodLab(variant=variant, mixed=True) as lab:
            lab.inject(fault)
            lab.collect(tmp_path / fault)
        _assert_agree(fault, _judge_all(tmp_path / fault, INPOD_PAIRS))
