from __future__ import annotations

import xml.etree.ElementTree as ET

from casemate.reports.junit import JUnitCase, junit_xml


def test_suites_cases_and_failures():
    text = junit_xml(
        "scan",
        [
            JUnitCase("escape", "escape.privileged", "escape", None),
            JUnitCase(
                "escape",
                "Pod/ns/p",
                "escape.privileged",
                "privileged \x00<&>",
                "details\x1b",
                "critical",
            ),
            JUnitCase("images", "images.latest-tag", "images"),
        ],
    )
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(text.split("\n", 1)[1])
    assert root.attrib["tests"] == "3" and root.attrib["failures"] == "1"
    suites = root.findall("testsuite")
    assert [s.attrib["name"] for s in suites] == ["escape", "images"]
    assert suites[0].attrib["failures"] == "1"
    failure = suites[0].findall("testcase")[1].find("failure")
    assert failure is not None
    assert failure.attrib["message"] == "privileged \ufffd<&>"
    assert failure.attrib["type"] == "critical"
    assert failure.text == "details\ufffd"
    assert suites[1].find("testcase/failure") is None
