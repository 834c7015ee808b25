"""Single sign-on settings from the environment and casemate.toml; secrets stay hidden."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from casemate.core.settings import load_settings
from casemate.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CASEMATE_"):
            monkeypatch.delenv(key)


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASEMATE_SSO_GROUP_ROLES", '{"admins": ["admin"], "staff": ["operator"]}')
    monkeypatch.setenv("CASEMATE_SSO_BREAK_GLASS_USERS", '["oncall"]')
    monkeypatch.setenv("CASEMATE_SSO_REQUIRED", "true")
    monkeypatch.setenv("CASEMATE_LDAP_BIND_PASSWORD", "bind-Secret-1234")
    monkeypatch.setenv("CASEMATE_OIDC_CLIENT_SECRET", "client-Secret-5678")
    st = load_settings()
    assert st.sso_group_roles == {"admins": ("admin",), "staff": ("operator",)}
    assert st.sso_break_glass_users == ("oncall",) and st.sso_required
    assert "bind-Secret-1234" not in repr(st) and "client-Secret-5678" not in repr(st)


def test_from_casemate_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "casemate.toml"
    config.write_text(
        'ldap_url = "ldaps://ldap.example.org"\n'
        'ldap_user_base = "ou=people,dc=example,dc=org"\n'
        'sso_group_map = { "staff" = ["ops"] }\n'
        'oidc_scopes = ["openid", "email"]\n'
    )
    monkeypatch.setenv("CASEMATE_CONFIG", str(config))
    st = load_settings()
    assert st.ldap_url == "ldaps://ldap.example.org" and st.sso_group_map == {"staff": ("ops",)}
    assert st.oidc_scopes == ("openid", "email")


def test_a_misspelt_setting_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "casemate.toml"
    config.write_text('ldap_uri = "ldaps://ldap.example.org"\n')
    monkeypatch.setenv("CASEMATE_CONFIG", str(config))
    with pytest.raises(ConfigError, match="ldap_uri"):
        load_settings()
