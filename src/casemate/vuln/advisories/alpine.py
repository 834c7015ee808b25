"""Alpine's secdb JSON (secdb.alpinelinux.org/v3.20/main.json): per origin package, the
``secfixes`` map from the fixing version to the CVEs it fixes; version ``"0"`` means the
package was never affected."""

from __future__ import annotations

import re

from casemate.vuln.advisories.interface import AdvisoryError, Parsed, load_json
from casemate.vuln.model import Advisory, Range
from casemate.vuln.versions import valid_apk

_DISTRO = re.compile(r"^v\d+\.\d+$")


class AlpineSecdbSource:
    kind = "alpine-secdb"

    def parse(self, data: bytes, where: str) -> Parsed:
        document = load_json(data, where)
        if not isinstance(document, dict) or not isinstance(document.get("packages"), list):
            raise AdvisoryError(f"{where}: not an Alpine secdb document (no packages)")
        distro = str(document.get("distroversion", ""))
        if not _DISTRO.match(distro):
            raise AdvisoryError(f"{where}: unknown Alpine release {distro!r}")
        ecosystem = f"Alpine:{distro}"
        advisories: list[Advisory] = []
        problems: list[str] = []
        for entry in document["packages"]:
            pkg = entry.get("pkg") if isinstance(entry, dict) else None
            if not isinstance(pkg, dict) or not isinstance(pkg.get("name"), str):
                problems.append(f"{where}: a package entry without pkg.name")
                continue
            for version, ids in (pkg.get("secfixes") or {}).items():
                if version != "0" and not valid_apk(version):
                    problems.append(f"{where}: {pkg['name']}: invalid version {version!r}")
                    continue
                for text in ids or []:
                    names = str(text).split()
                    if not names:
                        continue
                    advisories.append(
                        Advisory(
                            id=names[0],
                            ecosystem=ecosystem,
                            package=pkg["name"],
                            state="not-affected" if version == "0" else "fixed",
                            ranges=() if version == "0" else (Range(fixed=version),),
                            aliases=tuple(names[1:]),
                            origin=where,
                        )
                    )
        return Parsed(tuple(advisories), tuple(problems))
