"""Scans kept for the API and the web page: one JSON file per scan in
``$CASEMATE_DATA_DIR/vuln/scans/`` (the images, their findings and the problems), newest
first. Pure data in, pure data out; the scanning itself is the caller's."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from casemate.errors import InvalidInput, NotFound
from casemate.vuln.model import Finding, Inventory
from casemate.vuln.rollout.journal import new_id

_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")


def scan_document(
    scan_id: str,
    target: str,
    inventories: Sequence[Inventory],
    findings: Sequence[Finding],
    problems: Sequence[str],
) -> dict[str, Any]:
    images = [
        {
            "image": inv.image,
            "digest": inv.digest,
            "os": inv.os.pretty_name or inv.os.id if inv.os else None,
            "packages": len(inv.packages),
            "findings": sum(1 for f in findings if f.image == inv.image),
        }
        for inv in inventories
    ]
    return {
        "id": scan_id,
        "target": target,
        "images": images,
        "findings": [asdict(f) for f in findings],
        "problems": list(problems),
    }


class ScanStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, scan_id: str) -> Path:
        if not _ID.match(scan_id):
            raise InvalidInput(f"{scan_id!r} is not a scan id")
        return self.directory / f"{scan_id}.json"

    def add(self, target: str, inventories: Sequence[Inventory], findings: Sequence[Finding],
            problems: Sequence[str]) -> dict[str, Any]:  # fmt: skip
        document = scan_document(new_id(), target, inventories, findings, problems)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(document["id"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(document))
        os.replace(tmp, path)
        return document

    def get(self, scan_id: str) -> dict[str, Any]:
        try:
            document: dict[str, Any] = json.loads(self._path(scan_id).read_text())
        except FileNotFoundError:
            raise NotFound(f"no scan {scan_id}") from None
        return document

    def all(self, limit: int = 100) -> list[dict[str, Any]]:
        if not self.directory.is_dir():
            return []
        paths = sorted(self.directory.glob("*.json"), reverse=True)[:limit]
        return [self.get(p.stem) for p in paths]
