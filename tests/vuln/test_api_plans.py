"""``POST /api/v1/vuln/plans`` plans like ``casemate vuln fix``: the init container downloads the
fixes and the dependencies they need, resolved against the mirror's security index. Against a
loopback mirror (the real bookworm-security ``InRelease``/``Packages`` from the test cache, or a
published index), never deb.debian.org; an unreadable index is a 502 problem naming the mirror."""

from __future__ import annotations

import lzma
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from casemate.core.runtime import Runtime
from casemate.server.routes import vuln as routes
from casemate.testenv.docker import DockerEngine
from tests.server.conftest import login, problem_of, runtime
from tests.vuln.advisories.test_attack_mirror import hostile_mirror, publish
from tests.vuln.remediate.test_deps import paragraph
from tests.vuln.remediate.test_fix_cli import ZLIB_FIXED, manifest
from tests.vuln.rollout.mirror import serve_mirror
from tests.vuln.test_api import api, loaded
from tests.vuln.test_cli import casemate

__all__ = ["api", "hostile_mirror", "loaded", "runtime"]
pytestmark = pytest.mark.docker


@pytest.fixture(autouse=True)
def fresh_indexes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "_indexes", {})


@pytest.fixture
def mirror() -> Iterator[tuple[str, list[str]]]:
    with serve_mirror("127.0.0.1") as served:
        yield served


def test_the_plan_is_the_one_vuln_fix_writes(
    api: TestClient, loaded: Runtime, debian12_image: str, docker_engine: DockerEngine,
    mirror: tuple[str, list[str]], tmp_path: Path,
) -> None:  # fmt: skip
    url, served = mirror
    admin = login(api)
    body = {"manifest": manifest(debian12_image), "security_mirror": url}
    plan = api.post("/api/v1/vuln/plans", json=body, headers=admin)
    assert plan.status_code == 200, plan.text
    got = plan.json()
    assert "/dists/bookworm-security/main/binary-amd64/Packages.xz" in served
    lines = {r["container"]: r["lines"] for r in got["rows"]}
    assert f"install zlib1g >= {ZLIB_FIXED}" in lines["app"]
    # resolved against the index: pinned versions, each file's SHA-256 from the index
    assert f" zlib1g={ZLIB_FIXED}" in got["remediated"]
    assert "has the SHA-256 of the index" in got["remediated"]
    assert f"deb {url} bookworm-security main" in got["remediated"]

    # the CLI, same data dir, manifest and mirror: the same second manifest
    original = tmp_path / "manifest.yaml"
    original.write_text(body["manifest"])
    done = casemate(loaded.settings.data_dir, "vuln", "fix", "--manifest", str(original),
                    "--security-mirror", url,
                    env={"DOCKER_HOST": docker_engine.host, "COLUMNS": "400"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "manifest.remediated.yaml").read_text() == got["remediated"]
    for line in got["diff"].splitlines():
        assert line.rstrip() in done.stdout

    # a second plan within INDEX_TTL reuses the parsed index
    fetched = len(served)
    again = api.post("/api/v1/vuln/plans", json=body, headers=admin)
    assert again.status_code == 200 and again.json() == got
    assert len(served) == fetched


def test_a_dependency_of_the_upgrade_is_downloaded_too(
    api: TestClient, debian12_image: str, hostile_mirror: tuple[str, dict[str, bytes]]
) -> None:
    url, files = hostile_mirror
    index = "\n\n".join([
        paragraph("zlib1g", ZLIB_FIXED, "libc6 (>= 2.14), libcasemate-test1 (>= 1.0)"),
        paragraph("libcasemate-test1", "1.0-1"),
    ])  # fmt: skip
    publish(files, lzma.compress(index.encode()))
    body = {"manifest": manifest(debian12_image), "security_mirror": url}
    plan = api.post("/api/v1/vuln/plans", json=body, headers=login(api))
    assert plan.status_code == 200, plan.text
    got = plan.json()
    (app,) = [r["lines"] for r in got["rows"] if r["container"] == "app"]
    assert (
        f"also install libcasemate-test1 1.0-1: zlib1g {ZLIB_FIXED} needs libcasemate-test1 "
        "(>= 1.0)" in app
    )
    assert "libcasemate-test1=1.0-1" in got["remediated"]


@pytest.mark.parametrize("broken", ["missing", "tampered"])
def test_an_unreadable_index_is_a_502_naming_the_mirror(
    api: TestClient, debian12_image: str, hostile_mirror: tuple[str, dict[str, bytes]],
    broken: str,
) -> None:  # fmt: skip
    url, files = hostile_mirror
    if broken == "tampered":
        publish(files, lzma.compress(paragraph("zlib1g", ZLIB_FIXED).encode()))
        files["/dists/bookworm-security/main/binary-amd64/Packages.xz"] += b"x"
    secret = url.replace("http://", "http://mirror-user:s3cret-pw@")
    body = {"manifest": manifest(debian12_image), "security_mirror": secret}
    plan = api.post("/api/v1/vuln/plans", json=body, headers=login(api))
    assert plan.status_code == 502, plan.text
    detail = problem_of(plan)["detail"]
    assert f"the package index of http://127.0.0.1:{url.rsplit(':', 1)[1]}" in detail
    assert "bookworm-security" in detail
    assert "s3cret-pw" not in plan.text
