"""``vuln patch-image``: a patched image built on the local Docker engine, without BuildKit or a
registry.

1. The image is inventoried and matched; :func:`~casemate.vuln.remediate.plan.plan_image` says
   which binaries to install (the C library and OpenSSL included) or why it cannot.
2. A container of the image runs, as root, the same download and install commands the
   remediated manifests use (the security suite only; each file at least the fixed version,
   SHA-256 checked before ``dpkg -i`` / ``apk add``), then removes its download directory.
3. It is committed with the **original** image's configuration (command, entrypoint, user,
   environment, working directory…) plus labels naming what was fixed: one extra layer.
4. The new image is scanned again: every planned package must be at least its fixed version.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from casemate.errors import InvalidInput, UpstreamError
from casemate.vuln.advisories.index import AdvisoryIndex
from casemate.vuln.inventory.sources import docker_socket, scan_docker_image
from casemate.vuln.match import match
from casemate.vuln.model import Finding, Inventory, Manager
from casemate.vuln.remediate.deps import index_arch
from casemate.vuln.remediate.fixes import IndexReader, security_mirror_for
from casemate.vuln.remediate.plan import (
    APT_LIST,
    APT_PARTS,
    FIXES_DIR,
    ContainerPlan,
    fetch_script,
    install_script,
    plan_image,
)
from casemate.vuln.versions import compare

LABEL = "io.casemate.vuln"
#: Image config keys that a commit takes from the body (the original image's).
CONFIG_KEYS = ("Cmd", "Entrypoint", "Env", "User", "WorkingDir", "Labels", "ExposedPorts",
               "Volumes", "StopSignal", "Healthcheck", "OnBuild", "Shell")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Patched:
    image: str  # the new image's name
    image_id: str
    base_id: str
    plan: ContainerPlan
    layers_added: int
    remaining: tuple[Finding, ...]  # findings of the new image (not fixable here, or no fix)


class Engine:
    """The few Docker engine calls a patch needs (unix socket only)."""

    def __init__(self, docker_host: str | None = None) -> None:
        self.socket = docker_socket(docker_host)
        self._http = httpx.Client(transport=httpx.HTTPTransport(uds=self.socket),
                                  base_url="http://docker", timeout=60)  # fmt: skip

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, *, what: str, timeout: float | None = 60,
             **kwargs: Any) -> httpx.Response:  # fmt: skip
        try:
            resp = self._http.request(method, path, timeout=timeout, **kwargs)
        except httpx.HTTPError as e:
            raise UpstreamError(f"Docker engine at {self.socket}: {what}: {e}") from None
        if resp.status_code >= 400:
            try:
                message = str(resp.json().get("message", ""))
            except ValueError:
                message = resp.text[:300]
            raise UpstreamError(f"Docker engine: {what}: {resp.status_code} {message}")
        return resp

    def logs(self, container: str) -> str:
        raw = self.call(
            "GET",
            f"/containers/{container}/logs",
            params={"stdout": "1", "stderr": "1", "tail": "40"},
            what="logs",
        ).content
        out, offset = bytearray(), 0
        while offset + 8 <= len(raw):  # the multiplexed stream: 8-byte frame headers
            (size,) = struct.unpack(">I", raw[offset + 4 : offset + 8])
            out += raw[offset + 8 : offset + 8 + size]
            offset += 8 + size
        return out.decode("utf-8", "replace") if offset else raw.decode("utf-8", "replace")


def _root(config: dict[str, Any]) -> str:
    """The patch container's user: root; left unset when the image runs as root already, as
    the engine's commit would otherwise keep an explicit "0" where the image had none."""
    user = str(config.get("User") or "")
    return "" if user.split(":")[0] in ("", "0", "root") else "0"


def patch_script(plan: ContainerPlan, codename: str, mirror: str) -> str:
    return (
        f"{fetch_script(plan, codename, mirror)}; {install_script(plan)}; "
        f"cd /; rm -rf {FIXES_DIR} {APT_LIST} {APT_PARTS}"
    )


def labels(plan: ContainerPlan, base: str, base_id: str) -> dict[str, str]:
    fixed = sorted({v for f in plan.fixes for v in f.vulnerabilities})
    return {
        f"{LABEL}.patched-from": f"{base}@{base_id}",
        f"{LABEL}.packages": " ".join(f"{f.binary}>={f.minimum}" for f in plan.fixes),
        f"{LABEL}.fixes": " ".join(fixed)[:4000],
    }


def still_vulnerable(plan: ContainerPlan, inventory: Inventory) -> list[str]:
    """The planned binaries the new image does not have at their fixed version. Pure."""
    installed = {p.name: p.version for p in inventory.packages}
    wrong = []
    for fix in plan.fixes:
        version = installed.get(fix.binary)
        manager: Manager = "apk" if plan.manager == "apk" else "dpkg"
        if version is None or compare(manager, version, fix.minimum) < 0:
            wrong.append(f"{fix.binary} {version or '(missing)'} < {fix.minimum}")
    return wrong


def patch_image(image: str, index: AdvisoryIndex, *, tag: str | None = None,
                security_mirror: str | None = None, network: str = "default",
                docker_host: str | None = None, timeout: float = 900,
                read: Callable[[str], Inventory] | None = None,
                read_index: IndexReader | None = None) -> Patched:  # fmt: skip
    """``read_index``: resolve the dependencies of the upgrade against the mirror's index (the
    patch then downloads pinned, hash-checked files: see ``vuln fix``)."""
    reader = read or (lambda name: scan_docker_image(name, docker_host=docker_host))
    inventory = reader(image)
    packages = None
    if read_index is not None and inventory.os is not None and inventory.os.manager == "dpkg":
        packages = read_index(security_mirror_for(inventory.os, security_mirror), inventory.os,
                              index_arch(inventory.packages))  # fmt: skip
    plan = plan_image(image, inventory, match(inventory, index).findings, packages)
    if plan.refusals:
        raise InvalidInput(f"{image} cannot be patched: {'; '.join(plan.refusals)}")
    if not plan.fixes:
        raise InvalidInput(f"{image}: nothing to patch (no finding with an installable fix)")
    assert inventory.os is not None
    mirror = security_mirror_for(inventory.os, security_mirror)
    target = tag or f"{image.rsplit('@', 1)[0]}-casemate-patched"
    if ":" not in target.rsplit("/", 1)[-1]:
        target += ":latest"
    repo, _, version = target.rpartition(":")
    engine = Engine(docker_host)
    try:
        described = engine.call("GET", f"/images/{quote(image, safe='/:@')}/json",
                                what=f"read {image}").json()  # fmt: skip
        base_id, config = str(described["Id"]), dict(described.get("Config") or {})
        spec = {
            "Image": base_id,
            "User": _root(config),
            "Entrypoint": ["sh", "-c"],
            "Cmd": [patch_script(plan, inventory.os.codename, mirror)],
            "HostConfig": {"NetworkMode": network},
        }
        created = engine.call(
            "POST", "/containers/create", what="create the patch container", json=spec
        ).json()
        container = str(created["Id"])
        try:
            engine.call("POST", f"/containers/{container}/start", what="start the patch")
            waited = engine.call("POST", f"/containers/{container}/wait", what="wait for the "
                                 "patch", timeout=timeout).json()  # fmt: skip
            if waited.get("StatusCode") != 0:
                raise UpstreamError(
                    f"patching {image} failed (exit {waited.get('StatusCode')}):\n"
                    + engine.logs(container)[-3000:]
                )
            body = {k: config[k] for k in CONFIG_KEYS if config.get(k) is not None}
            body["Labels"] = {**(config.get("Labels") or {}), **labels(plan, image, base_id)}
            if not body.get("Entrypoint"):  # an empty one, not the patch container's "sh -c"
                body["Entrypoint"] = []  # (the engine fills unset fields from the container)
            body.setdefault("Cmd", [])
            body.setdefault("User", "")
            committed = engine.call("POST", "/commit", what="commit the patched image",
                                    params={"container": container, "repo": repo, "tag": version,
                                            "comment": "casemate vuln patch-image"},
                                    json=body).json()  # fmt: skip
        finally:
            engine.call("DELETE", f"/containers/{container}", params={"force": "1"},
                        what="remove the patch container")  # fmt: skip
        new_id = str(committed["Id"])
        layers = engine.call("GET", f"/images/{new_id}/json", what="read the patched image")
        base_layers = len((described.get("RootFS") or {}).get("Layers") or [])
        added = len((layers.json().get("RootFS") or {}).get("Layers") or []) - base_layers
    finally:
        engine.close()
    rescanned = reader(target)
    wrong = still_vulnerable(plan, rescanned)
    if wrong:
        raise UpstreamError(f"{target} was built but is still vulnerable: {'; '.join(wrong)}")
    return Patched(target, new_id, base_id, plan, added,
                   tuple(match(rescanned, index).findings))  # fmt: skip


def summary(patched: Patched) -> dict[str, Any]:
    return {
        "image": patched.image,
        "id": patched.image_id,
        "base": patched.base_id,
        "layers_added": patched.layers_added,
        "installed": [
            {"binary": f.binary, "at_least": f.minimum, "fixes": list(f.vulnerabilities)}
            for f in patched.plan.fixes
        ],  # fmt: skip
        "downloaded": [  # the fixes and the dependencies they needed, as the index listed them
            {
                "package": d.package,
                "version": d.version,
                "sha256": d.sha256,
                "needed_by": d.needed_by,
            }
            for d in patched.plan.downloads
        ],  # fmt: skip
        "remaining": [
            {"package": f.package, "state": f.state, "advisory": f.advisory}
            for f in patched.remaining
        ],
    }
