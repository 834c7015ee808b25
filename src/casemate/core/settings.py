"""Settings: environment (``CASEMATE_…``), an optional TOML file, then defaults.

Outside dev mode Casemate refuses to start with a default or weak secret. Secrets are
``SecretStr`` so they never show up in ``repr`` or logs.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from casemate.errors import ConfigError

#: Values that must never protect a real deployment (they appear in docs and examples).
KNOWN_WEAK_SECRETS = frozenset(
    {"", "admin", "password", "changeme", "change-me", "secret", "casemate", "example", "test"}
)
MIN_ADMIN_PASSWORD = 12


def _toml_path() -> Path | None:
    explicit = os.environ.get("CASEMATE_CONFIG")
    if explicit:
        return Path(explicit)
    data_dir = os.environ.get("CASEMATE_DATA_DIR")
    if data_dir and (Path(data_dir) / "casemate.toml").is_file():
        return Path(data_dir) / "casemate.toml"
    return None


class Settings(BaseSettings):
    """Everything Casemate reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="CASEMATE_", extra="forbid", frozen=True, validate_default=True
    )

    data_dir: Path = Field(default=Path("casemate-data"))
    database_url: str | None = None
    listen: str = "127.0.0.1:8080"
    dev_mode: bool = False

    master_key: SecretStr | None = None
    master_key_file: Path | None = None
    admin_username: str = "admin"
    admin_password: SecretStr | None = None

    session_ttl_seconds: int = Field(default=8 * 3600, gt=0)
    login_max_failures: int = Field(default=5, gt=0)
    lockout_seconds: int = Field(default=900, gt=0)
    password_min_length: int = Field(default=MIN_ADMIN_PASSWORD, ge=8, le=256)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    syslog_target: str | None = None
    sqlite_synchronous: str = "FULL"
    log_level: str = "INFO"
    review_admin_self_approval: bool = False
    # new pending reviews are POSTed here as JSON with a Slack-style "text" (docs/admin.md)
    review_webhook_url: SecretStr | None = None

    # bastion: the Kubernetes API proxy the sessions' kubectl talks to, and the tools it runs
    kubeproxy_listen: str = "127.0.0.1:8443"
    kubeproxy_hosts: tuple[str, ...] = ()  # extra names/addresses in the proxy's certificate
    kubectl_path: Path | None = None  # default: kubectl on PATH
    helm_path: Path | None = None  # default: helm on PATH
    command_timeout_seconds: int = Field(default=600, gt=0, le=24 * 3600)
    bastion_session_ttl_seconds: int = Field(default=12 * 3600, gt=0)
    review_wait_seconds: int = Field(default=1800, gt=0, le=7 * 24 * 3600)
    # bastion: the SSH entry (ssh -p PORT user@gateway); off unless ssh_listen is set
    ssh_listen: str | None = None
    ssh_idle_timeout_seconds: int = Field(default=900, gt=0, le=7 * 24 * 3600)

    # edge: casemate edge serve (docs/edge.md); each has a command-line option of its own
    edge_listen: str = "unix:///run/casemate/docker.sock"
    edge_docker: str = "unix:///var/run/docker.sock"
    edge_socket_mode: str = "0660"
    edge_socket_group: str | None = None
    edge_token_header: str = "X-Casemate-Token"
    edge_allow_paths: tuple[str, ...] = ()
    edge_insecure_registries: tuple[str, ...] = ()
    edge_max_memory: int | None = None
    edge_max_pids: int | None = None
    edge_broker: str | None = None  # HOST:PORT of the cloud's MQTT broker; none: no cloud
    edge_broker_user: str | None = None  # the password: CASEMATE_BROKER_PASSWORD
    edge_broker_ca: Path | None = None
    edge_gateway_id: str | None = None
    edge_mac: str | None = None
    edge_cloud_fingerprint: str | None = None
    edge_authz_timeout_seconds: float = 3.0
    edge_register_timeout_seconds: float = 10.0
    edge_register_retry_max_seconds: float = 60.0
    edge_guard: bool = False
    edge_guard_cpu_percent: float = 90.0
    edge_guard_memory_percent: float = 90.0
    edge_guard_window_seconds: float = 10.0

    # single sign-on (docs/sso.md): who may still use a local password, and what groups grant
    sso_required: bool = False  # local passwords only for the break-glass accounts
    sso_break_glass_users: tuple[str, ...] = ()  # besides admin_username
    sso_group_roles: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    sso_group_map: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # LDAP: simple bind over ldaps:// or ldap:// with StartTLS; off unless ldap_url is set
    ldap_url: str | None = None
    ldap_starttls: bool = False
    ldap_ca_file: Path | None = None
    ldap_bind_dn: str | None = None
    ldap_bind_password: SecretStr | None = None
    ldap_user_base: str = ""
    ldap_user_filter: str = "(&(objectClass=inetOrgPerson)(uid={username}))"
    ldap_username_attribute: str = "uid"
    ldap_group_base: str = ""  # empty: no group search
    ldap_group_filter: str = "(&(objectClass=groupOfNames)(member={dn}))"
    ldap_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    ldap_provider_name: str = "ldap"
    # OpenID Connect: authorization code flow with PKCE; off unless oidc_issuer is set
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_redirect_url: str | None = None  # https://GATEWAY/api/v1/auth/oidc/callback
    oidc_scopes: tuple[str, ...] = ("openid", "profile", "email", "groups")
    oidc_username_claim: str = "preferred_username"
    oidc_groups_claim: str = "groups"
    oidc_ca_file: Path | None = None
    oidc_provider_name: str = "oidc"
    oidc_timeout_seconds: float = Field(default=10.0, gt=0, le=60)

    @field_validator("sqlite_synchronous")
    @classmethod
    def _sync_mode(cls, v: str) -> str:
        if v.upper() not in {"FULL", "NORMAL", "EXTRA"}:
            raise ValueError("must be FULL, NORMAL or EXTRA")
        return v.upper()

    @field_validator("listen", "syslog_target", "kubeproxy_listen", "ssh_listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is not None:
            parse_listen(v)
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_path()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    # Derived values -----------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'casemate.db').absolute()}"

    @property
    def resolved_master_key_file(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"

    def check_secrets(self) -> None:
        """Refuse default or weak secrets unless in dev mode."""
        if self.dev_mode:
            return
        if self.master_key is not None:
            raw = self.master_key.get_secret_value()
            if raw.strip().lower() in KNOWN_WEAK_SECRETS:
                raise ConfigError("CASEMATE_MASTER_KEY is a default value; generate a real key")
        if self.admin_password is not None:
            pw = self.admin_password.get_secret_value()
            if pw.lower() in KNOWN_WEAK_SECRETS or len(pw) < MIN_ADMIN_PASSWORD:
                raise ConfigError(
                    f"CASEMATE_ADMIN_PASSWORD is a default or shorter than {MIN_ADMIN_PASSWORD} "
                    "characters (set CASEMATE_DEV_MODE=1 only for development)"
                )
        if "://" in (self.database_url or "") and _url_password(self.database_url or "") in (
            KNOWN_WEAK_SECRETS - {""}
        ):
            raise ConfigError("the database URL uses a default password")


def _url_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password or ""
    except Exception:  # any parse failure is reported by the engine later
        return ""


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) to a tuple; raises ``ValueError``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if not 0 <= int(port) < 65536:
        raise ValueError(f"port {port} is out of range (0 to 65535) in {value!r}")
    return host.strip("[]"), int(port)


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation errors into one clear ``ConfigError``."""
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read the configuration file: {e}") from None
    return settings
