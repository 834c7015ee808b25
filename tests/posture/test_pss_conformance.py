"""The upstream Pod Security Standards fixtures (../shared/conformance/pss, beside the repo):
every pass pod gives no finding of its level, every fail pod a finding of its control."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from casemate.posture.engine import Scanner
from casemate.posture.model import Settings, Subject
from casemate.posture.rules import ALL_RULES

PSS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "pss"


@dataclass(frozen=True)
class Case:
    path: Path
    level: str
    version: tuple[int, int]
    expect_fail: bool
    control: str


def _cases() -> list[Case]:
    if not PSS_DIR.is_dir():
        return []
    cases = []
    for path in sorted(PSS_DIR.glob("*/v*/*/*.yaml")):
        level, version, verdict = path.parts[-4], path.parts[-3], path.parts[-2]
        major, minor = (int(x) for x in version[1:].split("."))
        control = re.sub(r"\d+$", "", path.stem)
        cases.append(Case(path, level, (major, minor), verdict == "fail", control))
    return cases


CASES = _cases()


def _rules_for(level: str):
    levels = {"baseline": ("baseline",), "restricted": ("baseline", "restricted")}[level]
    return [r for r in ALL_RULES if r.pss in levels]


def _verdict(case: Case) -> tuple[bool, set[str]]:
    """(did the rules of the control fire, the ids of every level rule that fired)."""
    obj = yaml.safe_load(case.path.read_text())
    findings = Scanner(_rules_for(case.level), Settings(pss_version=case.version)).check(
        Subject(obj)
    )
    fired = {f.rule_id for f in findings}
    of_control = {r.id for r in ALL_RULES if case.control in r.controls}
    return bool(fired & of_control), fired


def test_fixtures_are_present():
    assert PSS_DIR.is_dir(), (
        f"the PSS conformance fixtures are missing: expected {PSS_DIR} "
        "(CI clones the repo with shared/ beside it at ../shared)"
    )
    assert len(CASES) >= 100
    assert {c.level for c in CASES} == {"baseline", "restricted"}


def test_every_control_has_a_rule():
    controls = {c.control for c in CASES if c.expect_fail}
    covered = {name for r in ALL_RULES for name in r.controls}
    assert controls <= covered, controls - covered


@pytest.mark.parametrize("case", CASES, ids=lambda c: "/".join(c.path.parts[-4:]))
def test_fixture(case: Case):
    hit, fired = _verdict(case)
    if case.expect_fail:
        assert hit, f"{case.control} not reported; fired: {sorted(fired)}"
    else:
        assert not fired, f"a passing pod got findings: {sorted(fired)}"


def test_precision_and_recall(capsys):
    assert CASES, f"no PSS fixtures under {PSS_DIR}"
    tp = fp = fn = tn = 0
    for case in CASES:
        hit, fired = _verdict(case)
        if case.expect_fail:
            tp, fn = tp + hit, fn + (not hit)
        else:
            fp, tn = fp + bool(fired), tn + (not fired)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    with capsys.disabled():
        print(  # noqa: T201 - the figures are the point
            f"\nPSS fixtures: {len(CASES)} (tp={tp} fp={fp} fn={fn} tn={tn}) "
            f"precision={precision:.3f} recall={recall:.3f}"
        )
    assert precision == 1.0 and recall == 1.0
