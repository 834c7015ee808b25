"""OSV, Debian security tracker and Alpine secdb parsers, and the local index on disk."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casemate.vuln.advisories.alpine import AlpineSecdbSource
from casemate.vuln.advisories.debian import DebianTrackerSource
from casemate.vuln.advisories.index import IndexStore, detect, parse_path
from casemate.vuln.advisories.interface import AdvisoryError
from casemate.vuln.advisories.osv import OsvSource
from casemate.vuln.model import Range
from tests.vuln.advisories.samples import (
    OSV_ALPINE,
    OSV_DSA,
    OSV_UNKNOWN,
    SECDB,
    TRACKER,
    dumps,
)


def test_osv_debian_and_alpine() -> None:
    parsed = OsvSource().parse(dumps([OSV_DSA, OSV_ALPINE]), "osv.json")
    assert parsed.problems == ()
    by = {(a.ecosystem, a.package): a for a in parsed.advisories}
    dsa = by[("Debian:12", "openssl")]
    assert dsa.state == "fixed" and dsa.fixed == "3.0.14-1~deb12u2"
    assert dsa.cves == ("CVE-2024-5535", "CVE-2024-6119")
    assert dsa.ranges == (Range(None, "3.0.14-1~deb12u2"),)
    assert by[("Debian:11", "openssl")].fixed == "1.1.1w-0+deb11u2"
    assert by[("Alpine:v3.20", "openssl")].fixed == "3.3.2-r0"


def test_osv_unknown_ecosystem_and_bad_versions_are_named() -> None:
    bad_version = json.loads(json.dumps(OSV_ALPINE))
    bad_version["affected"][0]["ranges"][0]["events"][1]["fixed"] = "not a version"
    parsed = OsvSource().parse(dumps([OSV_UNKNOWN, bad_version, OSV_DSA]), "feed.json")
    assert parsed.problems == (
        "feed.json: PYSEC-2024-1: unknown ecosystem 'PyPI'",
        "feed.json: ALPINE-CVE-2024-6119: invalid version or event in its ranges",
    )
    assert len(parsed.advisories) == 2  # the good record still counts


@pytest.mark.parametrize("data", [b"{", b"\xff\xfe", b"[1, 2]", b'{"no": "id"}'])
def test_osv_bad_json(data: bytes) -> None:
    with pytest.raises(AdvisoryError, match="^bad.json"):
        OsvSource().parse(data, "bad.json")


def test_debian_tracker_states() -> None:
    parsed = DebianTrackerSource().parse(dumps(TRACKER), "tracker.json")
    assert parsed.problems == ()
    by = {a.id: a for a in parsed.advisories}
    assert set(by) == {"CVE-2024-5535", "CVE-2099-0001", "CVE-2024-28085", "CVE-2022-0563",
                       "CVE-2010-4756"}  # fmt: skip
    assert all(a.ecosystem == "Debian:12" for a in parsed.advisories)  # sid is not matched
    assert by["CVE-2024-5535"].fixed == "3.0.14-1~deb12u2"
    assert by["CVE-2099-0001"].state == "no-fix" and by["CVE-2099-0001"].severity == "high"
    assert by["CVE-2022-0563"].state == "not-affected"
    assert by["CVE-2010-4756"].state == "end-of-support"
    with pytest.raises(AdvisoryError, match="not a Debian security tracker"):
        DebianTrackerSource().parse(b"[]", "t.json")


def test_alpine_secdb() -> None:
    parsed = AlpineSecdbSource().parse(dumps(SECDB), "main.json")
    by = {a.id: a for a in parsed.advisories}
    assert by["CVE-2024-6119"].fixed == "3.3.2-r0"
    assert by["CVE-2024-5535"].aliases == ("ALPINE-13661",)
    assert by["CVE-2022-1343"].state == "not-affected"
    assert {a.ecosystem for a in parsed.advisories} == {"Alpine:v3.20"}
    with pytest.raises(AdvisoryError, match="unknown Alpine release"):
        AlpineSecdbSource().parse(dumps({**SECDB, "distroversion": "edge"}), "e.json")


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                         max_size=3),
                    max_leaves=20))  # fmt: skip
def test_parsers_never_crash_on_any_json(document: object) -> None:
    data = json.dumps(document).encode()
    for source in (OsvSource(), DebianTrackerSource(), AlpineSecdbSource()):
        try:
            source.parse(data, "fuzz.json")
        except AdvisoryError as e:
            assert str(e).startswith("fuzz.json")


def test_detect() -> None:
    assert detect(dumps(SECDB)) == "alpine-secdb"
    assert detect(dumps(OSV_DSA)) == "osv"
    assert detect(dumps([OSV_DSA])) == "osv"
    assert detect(dumps(TRACKER)) == "debian-tracker"


def test_directory_zip_and_index_store(tmp_path: Path) -> None:
    osv_dir = tmp_path / "osv"
    osv_dir.mkdir()
    (osv_dir / "DSA-5764-1.json").write_bytes(dumps(OSV_DSA))
    (osv_dir / "PYSEC.json").write_bytes(dumps(OSV_UNKNOWN))
    archive = tmp_path / "alpine.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ALPINE-CVE-2024-6119.json", dumps(OSV_ALPINE))
    (tmp_path / "tracker.json").write_bytes(dumps(TRACKER))
    (tmp_path / "main.json").write_bytes(dumps(SECDB))
    store = IndexStore(tmp_path / "db")
    assert store.sources() == []
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = store.import_path(osv_dir, now=when)
    assert first.kind == "osv" and first.advisories == 2
    assert first.problems == (f"{osv_dir}/PYSEC.json: PYSEC-2024-1: unknown ecosystem 'PyPI'",)
    assert first.imported_at == "2026-01-02T03:04:05+00:00"
    store.import_path(archive)
    store.import_path(tmp_path / "tracker.json")
    store.import_path(tmp_path / "main.json")
    again = store.import_path(osv_dir)  # replaces, never duplicates
    assert [s.origin for s in store.sources()].count(str(osv_dir.absolute())) == 1
    assert again.id == first.id
    index = store.load()
    assert index.count == 2 + 1 + 5 + 4
    assert {a.id for a in index.lookup("Debian:12", "openssl")} == {"DSA-5764-1",
                                                                    "CVE-2024-5535",
                                                                    "CVE-2099-0001"}  # fmt: skip
    assert index.ecosystems == {"Debian:11", "Debian:12", "Alpine:v3.20"}


def test_bad_inputs_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(AdvisoryError, match="no such file"):
        parse_path(tmp_path / "absent.json")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(AdvisoryError, match="broken.zip"):
        parse_path(broken)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdvisoryError, match="no JSON advisory files"):
        parse_path(tmp_path / "empty")
    with pytest.raises(AdvisoryError, match="unknown advisory kind"):
        parse_path(tmp_path, kind="nvd")
    bad = tmp_path / "bad.json"
    bad.write_text('{"id": "X", "affected": [')
    with pytest.raises(AdvisoryError, match=f"^{bad} is not valid JSON"):
        IndexStore(tmp_path / "db").import_path(bad)
    assert not (tmp_path / "db").exists()
    store = IndexStore(tmp_path / "db2")
    (tmp_path / "ok.json").write_bytes(dumps(OSV_DSA))
    info = store.import_path(tmp_path / "ok.json")
    (tmp_path / "db2" / f"{info.id}.json").write_text("{")
    with pytest.raises(AdvisoryError, match="is damaged"):
        store.load()
