"""``casemate edge`` command helpers: --allow-path checks and warnings, image names with tags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from casemate.cli.edge import allow_path_warnings
from casemate.errors import ConfigError
from tests.cli.conftest import cli_env


@pytest.fixture
def root_dir(tmp_path: Path) -> Path:
    """A root-owned 0755 directory whose ancestors are root-owned and not open for writing
    (tmp_path lies under /tmp, which is sticky)."""
    directory = tmp_path / "allowed"
    directory.mkdir(mode=0o755)
    for p in (directory, *directory.parents):
        if p.owner() != "root" or (p.stat().st_mode & 0o022 and not p.stat().st_mode & 0o1000):
            pytest.skip(f"{p} is not root-owned and closed for writing here")
    return directory


def test_allow_path_must_be_a_real_canonical_directory(tmp_path: Path, root_dir: Path) -> None:
    assert allow_path_warnings([str(root_dir)]) == []
    link = tmp_path / "link"
    link.symlink_to(root_dir)
    with pytest.raises(ConfigError, match="real path"):
        allow_path_warnings([str(link)])
    with pytest.raises(ConfigError, match="existing directory"):
        allow_path_warnings([str(tmp_path / "missing")])
    with pytest.raises(ConfigError, match="canonical"):
        allow_path_warnings([f"{root_dir}/"])
    with pytest.raises(ConfigError, match="canonical"):
        allow_path_warnings(["relative/dir"])


def test_directories_others_can_change_are_warned_about(root_dir: Path) -> None:
    root_dir.chmod(0o777)
    [warning] = allow_path_warnings([str(root_dir)])
    assert str(root_dir) in warning and "swap a bind source" in warning
    root_dir.chmod(0o1777)  # sticky does not help the allowed directory itself
    assert allow_path_warnings([str(root_dir)])
    root_dir.chmod(0o755)
    inner = root_dir / "inner"
    inner.mkdir(mode=0o755)
    os.chown(inner, 65534, 65534)
    [warning] = allow_path_warnings([str(inner)])
    assert warning.startswith(str(inner))
    root_dir.chmod(0o775)  # a group-writable directory above the allowed one
    warnings = allow_path_warnings([str(inner)])
    assert any(w.startswith(f"{root_dir} ") for w in warnings)


def test_edge_image_allow_accepts_a_tag(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "data")
    cmd = [sys.executable, "-m", "casemate.cli", "edge"]
    assert subprocess.run([*cmd, "init"], env=env, capture_output=True).returncode == 0
    digest = "sha256:" + "c" * 64
    allowed = subprocess.run(
        [*cmd, "image", "allow", "casemate-test/busybox:1", "--digest", digest],
        env=env,
        capture_output=True,
        text=True,
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "docker.io/casemate-test/busybox: 1 digest(s)" in allowed.stdout
    assert "the tag '1' is not part of it" in allowed.stderr
    pinned = subprocess.run(
        [*cmd, "image", "allow", f"casemate-test/busybox@{'sha256:' + 'e' * 64}"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert pinned.returncode == 0 and "2 digest(s)" in pinned.stdout, pinned.stderr
    image_id = subprocess.run(
        [*cmd, "image", "allow", "sha256:" + "f" * 64], env=env, capture_output=True, text=True
    )
    assert image_id.returncode != 0 and "not an image ID" in image_id.stderr
