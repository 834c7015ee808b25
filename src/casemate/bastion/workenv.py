"""The private working environment of one bastion session.

A session's commands run in a directory of their own (mode 0700) under the gateway's data
directory::

    <root>/kubeconfig   0600: Casemate's API proxy, trusting only the proxy's CA, with this
                        session's proxy token (``cmk_…``) — never the system account's
    <root>/preview/kubeconfig  0600: the same with the session's dry-run-only token, used
                        only by review previews (the proxy refuses every change it sends)
    <root>/workspace/   the working directory: files the user uploads, ``kubectl cp`` targets,
                        manifests and charts for ``-f``/``-k``/helm
    <root>/home/        HOME (kubectl's kuberc and helm's defaults never come from elsewhere)
    <root>/helm/        helm's cache, config and data
    <root>/tmp/         TMPDIR
    <root>/bin/         PATH: empty, so neither kubectl nor helm finds plugins or programs

and kubectl's discovery cache is shared per (cluster, system account) under
``<data>/cache/kube/<cluster>/<account>`` so kubectl starts fast; it holds API discovery
documents only. The environment of the commands is built from nothing (:attr:`WorkEnv.env`):
nothing of the gateway's own environment (its master key, database URL, …) reaches them.
:meth:`WorkEnv.remove` deletes everything but the shared cache.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final

from casemate.errors import ConfigError, InvalidInput
from casemate.k8s.client import Credential
from casemate.k8s.kubeconfig import render_kubeconfig

__all__ = ["WorkEnv", "WorkEnvSpec", "discovery_dir"]

_SAFE: Final = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class WorkEnvSpec:
    """What a session's environment is made of. ``token`` is the session's proxy token,
    ``preview_token`` its dry-run-only twin for review previews (none: no previews)."""

    session_id: str
    proxy_url: str
    proxy_ca_pem: bytes = field(repr=False)
    token: str = field(repr=False)
    cluster: str
    account: str
    namespace: str = "default"
    term: str = "dumb"
    preview_token: str = field(default="", repr=False)


def discovery_dir(data_dir: Path, cluster: str, account: str) -> Path:
    """The shared kubectl discovery cache of (cluster, account)."""
    return data_dir / "cache" / "kube" / _SAFE.sub("_", cluster) / _SAFE.sub("_", account)


def _mkdir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(mode=mode, parents=False, exist_ok=False)
    os.chmod(path, mode)
    return path


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


class WorkEnv:
    """One session's directory and environment (see the module docstring)."""

    def __init__(self, root: Path, env: Mapping[str, str], spec: WorkEnvSpec) -> None:
        self.root = root
        self.workspace = root / "workspace"
        self.kubeconfig = root / "kubeconfig"
        self.env: Mapping[str, str] = MappingProxyType(dict(env))
        self.spec = spec

    @classmethod
    def create(cls, base: Path, spec: WorkEnvSpec, *, cache_root: Path | None = None) -> WorkEnv:
        """Make the directory tree under ``base`` (created 0700 if missing)."""
        if not spec.proxy_url.startswith("https://"):
            raise ConfigError("the working environment needs the proxy's https:// URL")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", spec.session_id):
            raise InvalidInput("a session id is 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'")
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(base, 0o700)
        root = base / f"{spec.session_id}.{secrets.token_hex(4)}"
        _mkdir(root)
        try:
            for sub in ("workspace", "home", "helm", "tmp", "bin"):
                _mkdir(root / sub)
            for sub in ("cache", "config", "data"):
                _mkdir(root / "helm" / sub)
            text = render_kubeconfig(
                spec.proxy_url,
                spec.proxy_ca_pem,
                Credential.bearer(spec.token),
                name="casemate",
                namespace=spec.namespace,
            )
            _write_private(root / "kubeconfig", text)
            if spec.preview_token:
                _mkdir(root / "preview")
                _write_private(
                    root / "preview" / "kubeconfig",
                    render_kubeconfig(
                        spec.proxy_url,
                        spec.proxy_ca_pem,
                        Credential.bearer(spec.preview_token),
                        name="casemate-preview",
                        namespace=spec.namespace,
                    ),
                )
            cache = discovery_dir(cache_root or base.parent, spec.cluster, spec.account)
            cache.mkdir(mode=0o700, parents=True, exist_ok=True)
            env = {
                "PATH": str(root / "bin"),
                "HOME": str(root / "home"),
                "TMPDIR": str(root / "tmp"),
                "KUBECONFIG": str(root / "kubeconfig"),
                "KUBECACHEDIR": str(cache),
                "KUBECTL_KUBERC": "false",
                "KUBERC": "off",
                "HELM_CACHE_HOME": str(root / "helm" / "cache"),
                "HELM_CONFIG_HOME": str(root / "helm" / "config"),
                "HELM_DATA_HOME": str(root / "helm" / "data"),
                "HELM_PLUGINS": str(root / "helm" / "data" / "plugins"),
                "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8",
                "TERM": spec.term,
                "NO_PROXY": "*",
            }
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return cls(root, env, spec)

    @property
    def preview_env(self) -> Mapping[str, str] | None:
        """The environment of review previews: the session's, with the dry-run-only
        kubeconfig (None when the session has no preview credential)."""
        kubeconfig = self.root / "preview" / "kubeconfig"
        if not self.spec.preview_token or not kubeconfig.is_file():
            return None
        return MappingProxyType({**self.env, "KUBECONFIG": str(kubeconfig)})

    def remove(self) -> None:
        """Delete the session's directory (the shared discovery cache stays)."""
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def exists(self) -> bool:
        return self.root.exists()
