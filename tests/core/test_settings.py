from __future__ import annotations

from pathlib import Path

import pytest

from casemate.core.settings import load_settings, parse_listen
from casemate.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CASEMATE_"):
            monkeypatch.delenv(key)


def test_environment_then_toml_then_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "casemate.toml").write_text('listen = "127.0.0.1:9999"\nlog_level = "DEBUG"\n')
    monkeypatch.setenv("CASEMATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CASEMATE_LOG_LEVEL", "WARNING")
    s = load_settings()
    assert s.listen == "127.0.0.1:9999"  # from the TOML file in the data directory
    assert s.log_level == "WARNING"  # the environment wins over the file
    assert s.resolved_database_url.endswith("casemate.db")
    assert s.resolved_master_key_file == tmp_path / "master.key"


def test_unknown_toml_key_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('lisen = "x"\n')
    monkeypatch.setenv("CASEMATE_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="lisen"):
        load_settings()


def test_broken_toml_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b"listen = \xff\n")
    monkeypatch.setenv("CASEMATE_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="configuration file"):
        load_settings()


@pytest.mark.parametrize("value", ["8080", "host:", ":80", "h:99999", "h:-1", "h:x", "h:65536"])
def test_bad_listen(value: str) -> None:
    with pytest.raises(ConfigError, match="listen"):
        load_settings(listen=value)


def test_parse_listen_ipv6() -> None:
    assert parse_listen("[::1]:8443") == ("::1", 8443)


@pytest.mark.parametrize("password", ["admin", "changeme", "short-pw"])
def test_weak_admin_password_refused_outside_dev_mode(password: str) -> None:
    s = load_settings(admin_password=password)
    with pytest.raises(ConfigError, match="CASEMATE_ADMIN_PASSWORD") as e:
        s.check_secrets()
    assert password not in str(e.value)
    load_settings(admin_password=password, dev_mode=True).check_secrets()


def test_default_master_key_refused() -> None:
    with pytest.raises(ConfigError, match="default"):
        load_settings(master_key="changeme").check_secrets()


def test_secrets_are_hidden_in_repr() -> None:
    s = load_settings(admin_password="a-very-long-secret-password", master_key="k" * 44)
    assert "a-very-long-secret-password" not in repr(s)
    assert "k" * 44 not in repr(s)


def test_validation_error_does_not_echo_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASEMATE_SESSION_TTL_SECONDS", "secret-looking-value")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "secret-looking-value" not in str(e.value)
