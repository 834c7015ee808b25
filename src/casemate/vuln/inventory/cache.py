"""Inventories cached by image digest (one JSON file each). Only complete inventories are
cached; a damaged cache file is a miss, never an error."""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from casemate.vuln.model import Inventory, OsRelease, Package

_VERSION = 3  # 3: Package.provides
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")


def inventory_to_json(inventory: Inventory) -> dict[str, Any]:
    return {"version": _VERSION, **asdict(inventory)}


def inventory_from_json(data: dict[str, Any]) -> Inventory:
    if data.get("version") != _VERSION:
        raise ValueError("unknown inventory version")
    os_release = data["os"]
    return Inventory(
        image=str(data["image"]),
        digest=data["digest"],
        os=(
            OsRelease(**{**os_release, "id_like": tuple(os_release["id_like"])})
            if os_release
            else None
        ),
        packages=tuple(
            Package(**{**p, "provides": tuple((n, v) for n, v in p["provides"])})
            for p in data["packages"]
        ),
        problems=tuple(data["problems"]),
        tools=tuple(data["tools"]),
        user=str(data["user"]),
    )


class InventoryCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, digest: str | None) -> Path | None:
        m = _DIGEST.match(digest or "")
        return self.directory / f"{m[1]}.json" if m else None

    def get(self, digest: str | None, image: str) -> Inventory | None:
        path = self._path(digest)
        if path is None:
            return None
        try:
            inventory = inventory_from_json(json.loads(path.read_bytes()))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return replace(inventory, image=image)

    def put(self, inventory: Inventory) -> None:
        path = self._path(inventory.digest)
        if path is None or inventory.problems:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            partial.write_text(json.dumps(inventory_to_json(inventory)))
            os.replace(partial, path)
