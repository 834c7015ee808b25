"""The edge's composition root: settings (options, environment, casemate.toml) to the proxy,
the cloud link and the guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from casemate.core.settings import load_settings
from casemate.edge.service import guard_settings, link_config, proxy_config
from casemate.errors import ConfigError, InvalidInput


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASEMATE_CONFIG", raising=False)
    settings = load_settings(data_dir=tmp_path)
    config = proxy_config(settings)
    assert str(config.listen) == "/run/casemate/docker.sock"
    assert str(config.docker) == "/var/run/docker.sock"
    assert config.socket_mode == 0o660 and config.token_header == "X-Casemate-Token"
    assert config.policy.max_memory is None and config.policy.host_path_allowlist == frozenset()
    assert link_config(settings) is None and guard_settings(settings) is None


def test_environment_and_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "casemate.toml").write_text(
        'edge_listen = "unix:///tmp/cm-edge.sock"\n'
        'edge_allow_paths = ["/srv/projects"]\n'
        "edge_max_memory = 4294967296\n"
        "edge_guard = true\n"
        "edge_guard_window_seconds = 5\n"
    )
    monkeypatch.setenv("CASEMATE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CASEMATE_CONFIG", raising=False)
    monkeypatch.setenv("CASEMATE_EDGE_MAX_PIDS", "4096")
    monkeypatch.setenv("CASEMATE_EDGE_BROKER", "mqtt.internal:8883")
    monkeypatch.setenv("CASEMATE_EDGE_GATEWAY_ID", "gw-test")
    monkeypatch.setenv("CASEMATE_EDGE_AUTHZ_TIMEOUT_SECONDS", "1.5")
    settings = load_settings()
    config = proxy_config(settings)
    assert str(config.listen) == "/tmp/cm-edge.sock"
    assert config.policy.host_path_allowlist == frozenset({"/srv/projects"})
    assert config.policy.max_memory == 4294967296 and config.policy.max_pids == 4096
    link = link_config(settings)
    assert link is not None and link.gateway_id == "gw-test" and link.authz_timeout == 1.5
    guard = guard_settings(settings)
    assert guard is not None and guard.window == 5
    # the command line wins over the environment and the file
    overridden = load_settings(edge_max_pids=100, edge_listen="unix:///tmp/other.sock")
    assert proxy_config(overridden).policy.max_pids == 100
    assert str(proxy_config(overridden).listen) == "/tmp/other.sock"


def test_bad_values_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unix:///absolute/path"):
        proxy_config(load_settings(data_dir=tmp_path, edge_docker="tcp://1.2.3.4:2375"))
    with pytest.raises(InvalidInput, match="octal"):
        proxy_config(load_settings(data_dir=tmp_path, edge_socket_mode="rw-rw----"))
    with pytest.raises(ConfigError, match="no group"):
        proxy_config(load_settings(data_dir=tmp_path, edge_socket_group="no-such-group-x"))
    with pytest.raises(ConfigError, match="invalid setting edge_max_pids"):
        load_settings(data_dir=tmp_path, edge_max_pids="many")
