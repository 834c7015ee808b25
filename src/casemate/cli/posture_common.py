"""What the ``casemate posture`` commands share: their options, exit codes, loading CEL and
signature policies, running a scanner over inputs, printing a report, and applying the stored
exceptions."""

from __future__ import annotations

import contextlib
import gc
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from casemate.cli.common import err, out
from casemate.errors import InvalidInput, PolicyError
from casemate.posture.model import LATEST_PSS, Finding, Rule, Severity, Subject

if TYPE_CHECKING:  # the core runtime (SQLAlchemy) is the caller's, and the posture engine,
    # manifest loader and output load when a command runs: `posture --help` stays fast
    from casemate.core.runtime import Runtime
    from casemate.posture.engine import Scanner
    from casemate.posture.exceptions import PostureException
    from casemate.posture.manifests import LoadProblem
    from casemate.posture.signing import SignaturePolicy

#: casemate.posture.output.FORMATS, for the options' help (importing the output module loads
#: yaml and rich's syntax highlighting; a test checks they match)
FORMATS = ("table", "json", "sarif", "junit", "policyreport")

EXIT_FINDINGS = 1
EXIT_UNCHECKED = 2  # as the vulnerability scan: bad input or a partial scan

RuleOption = Annotated[
    list[str] | None,
    typer.Option(
        "--rule",
        "-r",
        help="Only these rules: ids or globs (escape.*); repeatable. Matching none is an error.",
    ),
]


FormatOption = Annotated[str, typer.Option("--format", "-f", help=f"One of: {', '.join(FORMATS)}.")]
FailOnOption = Annotated[
    str, typer.Option("--fail-on", help="Exit 1 when a finding is at least this severe.")
]
OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write the report to this file.")
]

PolicyOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--policy",
        help="File of ValidatingAdmissionPolicy objects: their CEL validations become rules "
        "cel.NAME.N (repeatable).",
    ),
]


SignaturePolicyOption = Annotated[
    Path | None,
    typer.Option(
        "--signature-policy",
        help="ImageSignaturePolicy file: which images must be signed by which cosign keys "
        "(rule images.signature).",
    ),
]


def signature_settings(path: Path | None) -> SignaturePolicy | None:
    """The signature policy of ``path`` (signatures verified now); rejected files on stderr."""
    if path is None:
        return None
    from casemate.posture.signing import load_signature_policy

    policy = load_signature_policy(path)
    for line in policy.rejected:
        err.print(f"signature not used: {line}", markup=False)
    return policy


def load_policy_files(paths: Sequence[Path]) -> list[Rule]:
    """The CEL rules of ValidatingAdmissionPolicy files; any file problem is an error."""
    from casemate.posture.manifests import LoadProblem, load_paths

    if not paths:
        return []
    from casemate.posture.cel import load_cel_rules

    objects = []
    for item in load_paths([str(p) for p in paths]):
        if isinstance(item, LoadProblem):
            raise InvalidInput(f"policy file {item.describe()}")
        objects.append(item.obj)
    try:
        rules = load_cel_rules(objects)
    except PolicyError as e:
        raise InvalidInput(e.message) from None  # bad input: exit 2 like any other
    if not rules:
        raise InvalidInput("the --policy files hold no ValidatingAdmissionPolicy")
    return rules


def parse_severity(text: str) -> Severity:
    try:
        return Severity.parse(text)
    except ValueError as e:
        raise InvalidInput(str(e)) from None


def parse_pss_version(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"v?(\d+)\.(\d+)", text.strip())
    if m is None:
        raise InvalidInput(f"--pss-version {text!r} is not like v1.37")
    version = (int(m.group(1)), int(m.group(2)))
    return min(version, LATEST_PSS)


@contextlib.contextmanager
def relaxed_gc() -> Iterator[None]:
    """Fewer cyclic garbage collections while a scan builds many small acyclic objects (every
    collection walks all the findings kept so far): about 10% of a large scan's time."""
    old = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def scan_items(
    items: Iterable[Subject | LoadProblem], scanner: Scanner
) -> tuple[list[Finding], list[LoadProblem]]:
    """Every finding and every problem of ``items`` (namespace rules at the end)."""
    findings: list[Finding] = []
    problems: list[LoadProblem] = []
    with relaxed_gc():
        for item in items:
            if isinstance(item, Subject):
                findings.extend(scanner.check(item))
            else:
                problems.append(item)
        findings.extend(scanner.finish())
    return findings, problems


def emit(
    fmt: str,
    findings: list[Finding],
    problems: list[LoadProblem],
    chosen: Sequence[Rule],
    objects: int,
    output: Path | None,
) -> None:
    from casemate.posture.output import render, render_table

    if fmt == "table" and output is None:
        render_table(out, findings, problems, objects)
        return
    text = render(fmt, findings, problems, chosen) if fmt != "table" else ""
    if output is not None:
        output.write_text(text if text.endswith("\n") else text + "\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    for p in problems:
        err.print(f"not checked: {p.describe()}", markup=False)


def open_findings(findings: Iterable[Finding]) -> list[Finding]:
    """The findings no exception covers (what ``--fail-on`` counts)."""
    return [f for f in findings if f.waiver is None]


def stored_exceptions(rt: Runtime) -> list[PostureException]:
    from casemate.posture.exception_store import ExceptionStore

    return ExceptionStore(rt.db, rt.audit).all(actor="casemate posture scan")


def mark_exceptions(findings: list[Finding], stored: list[PostureException]) -> list[Finding]:
    """Mark excepted findings; say on stderr which exceptions expired or matched nothing."""
    from datetime import UTC, datetime

    from casemate.posture.exceptions import apply_exceptions

    applied = apply_exceptions(findings, stored, datetime.now(UTC))
    by_id = {e.id: e for e in stored}
    for i in applied.expired:
        e = by_id[i]
        err.print(
            f"exception {i} ({e.scope.describe()}) expired {e.expires_at.isoformat()}: "
            "its findings count again",
            markup=False,
        )
    for i in applied.unused:
        err.print(f"exception {i} ({by_id[i].scope.describe()}) is unused", markup=False)
    return applied.findings
