"""``casemate doctor``: check every prerequisite of the gateway and say how to fix each.

Checks, in order (a failed check stops the ones that need it): the settings; the data
directory; the vault key; the database; kubectl and helm (bastion sessions run them; found by
setting or on PATH, with their versions); the ports the gateway listens on; the Docker socket
(only the edge proxy needs it); each registered cluster's API server (reachable, TLS with the
stored CA) and this machine's clock against the cluster's. Exit 1 when anything failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import typer

from casemate.cli.common import DataDirOption, out
from casemate.errors import CasemateError

Status = Literal["ok", "warn", "fail"]
MAX_SKEW_SECONDS = 30.0
TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def _tool(name: str, configured: Path | None, version_args: list[str]) -> Check:
    env_name = f"CASEMATE_{name.upper()}_PATH"
    path = str(configured) if configured else shutil.which(name)
    if not path or not Path(path).exists():
        where = f"{configured} does not exist" if configured else f"{name} is not on PATH"
        return Check(
            name,
            "fail",
            f"{where}: bastion sessions cannot run {name} commands",
            f"install {name} on the gateway host, or set {env_name} to its path",
        )
    try:
        r = subprocess.run(
            [path, *version_args], capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check(name, "fail", f"{path} does not run: {e}", f"reinstall {name}")
    version = r.stdout.strip().splitlines()[0] if r.stdout.strip() else ""
    if name == "kubectl":
        with contextlib.suppress(ValueError, KeyError, TypeError):
            version = json.loads(r.stdout)["clientVersion"]["gitVersion"]
    if r.returncode != 0:
        return Check(name, "fail", f"{path} exited {r.returncode}", f"reinstall {name}")
    return Check(name, "ok", f"{path} {version}".strip())


def _port(label: str, listen: str | None) -> Check:
    if not listen:
        return Check(label, "ok", "off")
    host, _, port = listen.rpartition(":")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host.strip("[]") or "0.0.0.0", int(port)))
    except OSError as e:
        return Check(
            label,
            "warn",
            f"{listen} is not free ({e.strerror}): fine if the gateway is running",
            "stop what listens there, or choose another address in the settings",
        )
    return Check(label, "ok", f"{listen} is free")


def _cluster(name: str, server: str, ca_pem: str) -> list[Check]:
    parts = urlsplit(server)
    host, port = parts.hostname or "", parts.port or 443
    context = ssl.create_default_context()
    if ca_pem:
        context = ssl.create_default_context(cadata=ca_pem)
    label = f"cluster {name}"
    try:
        with (
            socket.create_connection((host, port), timeout=TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.settimeout(TIMEOUT)
            tls.sendall(
                f"GET /version HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            sent = time.time()
            head = tls.recv(4096).decode("latin-1")
    except ssl.SSLError as e:
        return [
            Check(
                label,
                "fail",
                f"{server}: TLS failed ({e.reason or e})",
                "re-import the cluster's kubeconfig if its CA changed: casemate cluster import",
            )
        ]
    except OSError as e:
        return [
            Check(
                label,
                "fail",
                f"cannot reach {server}: {e.strerror or e}",
                "check the address, the network and firewalls from the gateway host",
            )
        ]
    found = [Check(label, "ok", f"{server} answers over TLS")]
    date = next((ln[5:].strip() for ln in head.split("\r\n") if ln.lower().startswith("date:")), "")
    if date:
        with contextlib.suppress(TypeError, ValueError):
            skew = parsedate_to_datetime(date).timestamp() - sent
            if abs(skew) > MAX_SKEW_SECONDS:
                found.append(
                    Check(
                        f"clock vs {name}",
                        "fail",
                        f"this machine's clock is {skew:+.0f} s off the cluster's",
                        "run NTP (e.g. systemd-timesyncd or chrony); TOTP codes and token"
                        " expiry depend on the clock",
                    )
                )
            else:
                found.append(Check(f"clock vs {name}", "ok", f"within {abs(skew):.0f} s"))
    return found


def run_checks(data_dir: Path | None) -> list[Check]:
    from casemate.core.runtime import open_runtime
    from casemate.core.settings import load_settings

    checks: list[Check] = []
    try:
        settings = load_settings(data_dir=data_dir)
    except CasemateError as e:
        return [Check("settings", "fail", e.message, "fix the setting it names (CASEMATE_*)")]
    except Exception as e:  # pydantic's validation error, shown as one line
        first = str(e).splitlines()
        return [Check("settings", "fail", " ".join(first[:3]), "fix the setting it names")]
    checks.append(Check("settings", "ok", "valid"))
    d = settings.data_dir
    if not d.is_dir():
        checks.append(
            Check(
                "data directory",
                "fail",
                f"{d} does not exist",
                f"start the gateway once (casemate serve --data-dir {d}) or pass --data-dir",
            )
        )
        return checks
    mode = stat.S_IMODE(d.stat().st_mode)
    writable = os.access(d, os.W_OK)
    if not writable:
        checks.append(Check("data directory", "fail", f"{d} is not writable", f"chown {d}"))
    elif mode & 0o077:
        checks.append(Check("data directory", "warn", f"{d} is mode {mode:o}", f"chmod 700 {d}"))
    else:
        checks.append(Check("data directory", "ok", f"{d} (mode {mode:o})"))
    key = settings.resolved_master_key_file
    if settings.master_key is not None:
        checks.append(Check("vault key", "ok", "from CASEMATE_MASTER_KEY"))
    elif not key.exists():
        checks.append(
            Check("vault key", "fail", f"{key} is missing", "restore it from your backup")
        )
    elif stat.S_IMODE(key.stat().st_mode) & 0o077:
        checks.append(
            Check("vault key", "fail", f"{key} is readable by others", f"chmod 600 {key}")
        )
    else:
        checks.append(Check("vault key", "ok", str(key)))
    try:
        runtime = open_runtime(settings, create=False)
    except CasemateError as e:
        checks.append(Check("database", "fail", e.message, "see docs/operations.md"))
        return checks
    try:
        checks.append(Check("database", "ok", f"audit records: {runtime.audit.head_seq()}"))
        checks.append(
            _tool("kubectl", settings.kubectl_path, ["version", "--client", "-o", "json"])
        )
        checks.append(_tool("helm", settings.helm_path, ["version", "--short"]))
        checks.append(_port("HTTP listen", settings.listen))
        checks.append(_port("API proxy listen", settings.kubeproxy_listen))
        checks.append(_port("SSH listen", settings.ssh_listen))
        sock = Path("/var/run/docker.sock")
        if sock.exists() and os.access(sock, os.R_OK | os.W_OK):
            checks.append(Check("docker socket", "ok", f"{sock} (for the edge proxy)"))
        else:
            checks.append(
                Check("docker socket", "warn", f"{sock} not usable: only the edge proxy needs it")
            )
        from casemate.k8s.clusters import Clusters

        clusters = Clusters(runtime.db, runtime.vault, runtime.audit).list_clusters()
        if not clusters:
            checks.append(
                Check(
                    "clusters",
                    "warn",
                    "none registered",
                    "casemate cluster import KUBECONFIG (or the web console's Cluster access)",
                )
            )
        for c in clusters:
            if not c.disabled:
                checks.extend(_cluster(c.name, c.server, c.ca_pem))
    finally:
        runtime.close()
    return checks


MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


def doctor(
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per check.")] = False,
) -> None:
    """Check the gateway's prerequisites and say how to fix each.

    Settings, data directory, vault key, database, kubectl and helm, ports, Docker socket,
    each cluster's API server and the clock against it. Exit 1 when a check failed."""
    checks = run_checks(data_dir)
    for c in checks:
        if as_json:
            out.print_json(
                json.dumps({"check": c.name, "status": c.status, "detail": c.detail, "fix": c.fix})
            )
            continue
        out.print(f"{MARK[c.status]}  {c.name}: {c.detail}", markup=False)
        if c.fix and c.status != "ok":
            out.print(f"      fix: {c.fix}", markup=False)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)
