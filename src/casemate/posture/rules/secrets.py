"""Secrets in the wrong place: literal credentials in container env and ConfigMaps, private
keys and well-known token formats, and Secret values passed through the environment."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

from casemate.posture.model import Hit, Path, Settings, Severity, Subject
from casemate.posture.podview import mapping, seq
from casemate.posture.rules.registry import Family

FAMILY = Family("secrets")
rule = FAMILY.rule

_SECRET_NAME: Final = re.compile(
    r"(PASSW(OR)?D|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIAL|AUTH_KEY|DSN)",
    re.IGNORECASE,
)
#: env names that look like secrets but name files, refs or switches
_NOT_SECRET: Final = re.compile(
    r"(_FILE|_PATH|_DIR|_NAME|_REF|_URL_FILE|_ENABLED|_LENGTH|_TTL)$", re.I
)
_PRIVATE_KEY: Final = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_TOKEN_FORMATS: Final = re.compile(
    r"(AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}|xox[abpr]-[A-Za-z0-9-]{10,}"
    r"|glpat-[A-Za-z0-9_-]{20}|sk_live_[A-Za-z0-9]{24,}|AIza[0-9A-Za-z_-]{35})"
)


def _secret_name(name: object) -> bool:
    return (
        isinstance(name, str) and bool(_SECRET_NAME.search(name)) and not _NOT_SECRET.search(name)
    )


def _env(subject: Subject) -> Iterator[tuple[Path, Mapping[str, Any], str]]:
    for pod in subject.pods:
        for c in pod.containers:
            for i, var in enumerate(seq(c.obj.get("env"))):
                if isinstance(var, Mapping):
                    yield (*c.path, "env", i), var, c.label


def _configmap_values(subject: Subject) -> Iterator[tuple[Path, str, str]]:
    if subject.kind != "ConfigMap":
        return
    for key, value in mapping(subject.obj.get("data")).items():
        if isinstance(value, str):
            yield ("data", str(key)), str(key), value


def _redact(value: str) -> str:
    return value[:4] + "…" if len(value) > 8 else "…"


@rule(
    "secrets.env-literal",
    Severity.HIGH,
    "Credential written into the pod spec",
    """An environment variable named like a credential has a literal value: it is readable by
    anyone who can read the workload (and lands in Git, CI logs and audit logs).""",
    "Move the value into a Secret and mount it as a file (or reference it with secretKeyRef).",
)
def env_literal(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for path, var, label in _env(subject):
        value = var.get("value")
        if _secret_name(var.get("name")) and isinstance(value, str) and value.strip():
            yield Hit((*path, "value"), _redact(value), f"{label} sets {var.get('name')} literally")


@rule(
    "secrets.private-key",
    Severity.CRITICAL,
    "Private key in a pod spec or ConfigMap",
    """A PEM private key sits in plain configuration: whoever can read the object holds the
    key.""",
    "Move the key into a Secret (or an external secret store) and rotate it.",
)
def private_key(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for path, var, label in _env(subject):
        value = var.get("value")
        if isinstance(value, str) and _PRIVATE_KEY.search(value):
            yield Hit(
                (*path, "value"), "-----BEGIN … PRIVATE KEY-----", f"{label} carries a private key"
            )
    for path, key, value in _configmap_values(subject):
        if _PRIVATE_KEY.search(value):
            yield Hit(
                path, "-----BEGIN … PRIVATE KEY-----", f"ConfigMap key {key} holds a private key"
            )


@rule(
    "secrets.token-format",
    Severity.CRITICAL,
    "Cloud or service token in plain configuration",
    """A value has the shape of a live credential (AWS access key, GitHub, GitLab, Slack,
    Stripe or Google API token).""",
    "Revoke the token, then store its replacement in a Secret.",
)
def token_format(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for path, var, label in _env(subject):
        value = var.get("value")
        if isinstance(value, str) and (m := _TOKEN_FORMATS.search(value)):
            yield Hit((*path, "value"), _redact(m.group(0)), f"{label} carries a token")
    for path, key, value in _configmap_values(subject):
        if m := _TOKEN_FORMATS.search(value):
            yield Hit(path, _redact(m.group(0)), f"ConfigMap key {key} holds a token")


@rule(
    "secrets.configmap-credential",
    Severity.HIGH,
    "Credential in a ConfigMap",
    """A ConfigMap key named like a credential has a value; ConfigMaps are not access
    controlled like Secrets and are often readable by every workload.""",
    "Move the value into a Secret.",
    kinds=("ConfigMap",),
)
def configmap_credential(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for path, key, value in _configmap_values(subject):
        if _secret_name(key) and value.strip() and "\n" not in value.strip():
            yield Hit(path, _redact(value), f"ConfigMap key {key} looks like a credential")


@rule(
    "secrets.env-secret-ref",
    Severity.LOW,
    "Secret passed through an environment variable",
    """Environment variables are inherited by every child process, shown by debugging tools
    and written into crash reports; a mounted file is read only where needed.""",
    "Mount the Secret as a volume and read the file.",
)
def env_secret_ref(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for path, var, label in _env(subject):
        ref = mapping(mapping(var.get("valueFrom")).get("secretKeyRef"))
        if ref:
            yield Hit(
                (*path, "valueFrom", "secretKeyRef"),
                dict(ref),
                f"{label} reads Secret {ref.get('name')} into {var.get('name')}",
            )


@rule(
    "secrets.envfrom-secret",
    Severity.LOW,
    "Whole Secret loaded into the environment",
    """envFrom with a secretRef puts every key of the Secret, present and future, into the
    environment.""",
    "Mount the Secret as a volume (or pick the keys needed).",
)
def envfrom_secret(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod in subject.pods:
        for c in pod.containers:
            for i, source in enumerate(seq(c.obj.get("envFrom"))):
                ref = mapping(mapping(source).get("secretRef"))
                if ref:
                    yield Hit(
                        (*c.path, "envFrom", i, "secretRef"),
                        dict(ref),
                        f"{c.label} loads Secret {ref.get('name')} into its environment",
                    )
