"""The private working environment: layout, modes, what the environment holds and lacks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from casemate.bastion.workenv import WorkEnv, WorkEnvSpec, discovery_dir
from casemate.errors import ConfigError, InvalidInput
from casemate.kubeproxy.proxy import generate_certificates

CA = generate_certificates().ca_pem


def spec(**kw: object) -> WorkEnvSpec:
    base: dict[str, object] = {
        "session_id": "bs-1",
        "proxy_url": "https://127.0.0.1:8443",
        "proxy_ca_pem": CA,
        "token": "cmk_sessiontoken",
        "cluster": "prod",
        "account": "ops",
        "namespace": "app",
    }
    base.update(kw)
    return WorkEnvSpec(**base)  # type: ignore[arg-type]


def test_layout_modes_and_kubeconfig(tmp_path: Path) -> None:
    env = WorkEnv.create(tmp_path / "sessions", spec(), cache_root=tmp_path)
    assert stat.S_IMODE(os.stat(env.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(env.kubeconfig).st_mode) == 0o600
    assert env.workspace.is_dir()
    doc = yaml.safe_load(env.kubeconfig.read_text())
    assert doc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:8443"
    assert doc["users"][0]["user"] == {"token": "cmk_sessiontoken"}
    assert doc["contexts"][0]["context"]["namespace"] == "app"
    assert env.env["KUBECACHEDIR"] == str(discovery_dir(tmp_path, "prod", "ops"))
    env.remove()
    assert not env.root.exists()
    assert discovery_dir(tmp_path, "prod", "ops").is_dir()  # shared cache stays


def test_environment_is_built_from_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASEMATE_MASTER_KEY", "gateway-secret-value")
    env = WorkEnv.create(tmp_path / "s", spec(), cache_root=tmp_path)
    assert not any("gateway-secret-value" in v for v in env.env.values())
    assert not any(k.startswith("CASEMATE_") for k in env.env)
    assert env.env["PATH"] == str(env.root / "bin") and not os.listdir(env.root / "bin")
    assert env.env["HOME"].startswith(str(env.root))


def test_two_sessions_get_distinct_directories(tmp_path: Path) -> None:
    a = WorkEnv.create(tmp_path / "s", spec(), cache_root=tmp_path)
    b = WorkEnv.create(tmp_path / "s", spec(), cache_root=tmp_path)
    assert a.root != b.root


@pytest.mark.parametrize("sid", ["", "../x", "a/b", "x" * 65, "bs-1\n"])
def test_bad_session_ids(tmp_path: Path, sid: str) -> None:
    with pytest.raises(InvalidInput):
        WorkEnv.create(tmp_path, spec(session_id=sid))


def test_plain_http_proxy_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        WorkEnv.create(tmp_path, spec(proxy_url="http://127.0.0.1:1"))
