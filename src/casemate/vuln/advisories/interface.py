"""The one interface every advisory source implements, and its error.

A source is a pure parser: the bytes of one file (and the name to blame) in, normalized
:class:`~casemate.vuln.model.Advisory` records and the problems met on the way out. A file
that cannot be parsed at all raises :class:`AdvisoryError` naming it; a record that cannot be
used (unknown ecosystem, invalid version) is skipped and reported as a problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from casemate.errors import InvalidInput
from casemate.vuln.model import Advisory
from casemate.vuln.versions import Ecosystem

SUPPORTED_ECOSYSTEMS = ("Debian:", "Ubuntu:", "Alpine:v")


class AdvisoryError(InvalidInput):
    """An advisory file cannot be read or parsed."""


@dataclass(frozen=True, slots=True)
class Parsed:
    advisories: tuple[Advisory, ...]
    problems: tuple[str, ...] = ()


class AdvisorySource(Protocol):
    kind: str

    def parse(self, data: bytes, where: str) -> Parsed: ...


def load_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdvisoryError(f"{where} is not valid JSON: {e}") from None


def manager_of(ecosystem: str) -> Ecosystem | None:
    if ecosystem.startswith(("Debian:", "Ubuntu:")):
        return "dpkg"
    if ecosystem.startswith("Alpine:v"):
        return "apk"
    return None
