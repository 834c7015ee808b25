"""JUnit XML: findings as failed test cases, so CI systems show them as a test report.

Neutral input: :class:`JUnitCase` values (a suite, a name, and a failure or none); one
document out, one ``<testsuite>`` per suite in first-seen order. Characters XML 1.0 cannot
carry are replaced, so any value from a scanned file can be written.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["JUnitCase", "junit_xml"]

_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


@dataclass(frozen=True)
class JUnitCase:
    suite: str
    name: str
    classname: str
    failure: str | None = None  # the one-line message; None: the case passed
    details: str = ""
    failure_type: str = ""


def junit_xml(name: str, cases: Sequence[JUnitCase]) -> str:
    """A ``<testsuites>`` document (UTF-8 text with an XML declaration)."""
    suites: dict[str, list[JUnitCase]] = {}
    for case in cases:
        suites.setdefault(case.suite, []).append(case)
    root = ET.Element(
        "testsuites",
        name=_clean(name),
        tests=str(len(cases)),
        failures=str(sum(c.failure is not None for c in cases)),
        errors="0",
    )
    for suite_name, members in suites.items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_clean(suite_name),
            tests=str(len(members)),
            failures=str(sum(c.failure is not None for c in members)),
            errors="0",
            skipped="0",
        )
        for case in members:
            element = ET.SubElement(
                suite, "testcase", name=_clean(case.name), classname=_clean(case.classname)
            )
            if case.failure is not None:
                failure = ET.SubElement(
                    element, "failure", message=_clean(case.failure), type=_clean(case.failure_type)
                )
                failure.text = _clean(case.details)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
