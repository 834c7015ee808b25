"""Debian's security support lists (package debian-security-support,
``/usr/share/debian-security-support/security-support-ended.debN``): source packages whose
security support ended, or ends, before the release's own end of life.

One line per package: source name (a regular expression such as ``php-horde.*`` is allowed),
the last version with support, the date support ends, and details. Every installed version of
such a package is reported as **end of support**, with the date and details as evidence."""

from __future__ import annotations

import re

from casemate.vuln.advisories.interface import AdvisoryError, Parsed
from casemate.vuln.model import Advisory, Range

_RELEASE = re.compile(r"security-support-ended\.deb(\d+)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9+.\-*?\[\]()|^$\\]*$")


def release_of(where: str) -> str | None:
    m = _RELEASE.search(where)
    return m[1] if m else None


class DebianSupportEndedSource:
    kind = "debian-support-ended"

    def parse(self, data: bytes, where: str) -> Parsed:
        release = release_of(where)
        if release is None:
            raise AdvisoryError(
                f"{where}: cannot tell the Debian release (the file must be named "
                "security-support-ended.debN)"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise AdvisoryError(f"{where} is not UTF-8 text") from None
        advisories: list[Advisory] = []
        problems: list[str] = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split(None, 3)
            if len(fields) < 3 or not _DATE.match(fields[2]) or not _NAME.match(fields[0]):
                problems.append(f"{where} line {number}: not 'package version date [details]'")
                continue
            name, version, date = fields[:3]
            try:
                re.compile(name)
            except re.error:
                problems.append(f"{where} line {number}: invalid package pattern {name!r}")
                continue
            details = fields[3].strip() if len(fields) > 3 else ""
            advisories.append(
                Advisory(
                    id=f"DEBIAN-EOS-{release}-{name}",
                    ecosystem=f"Debian:{release}",
                    package=name,
                    state="end-of-support",
                    ranges=(Range(),),
                    summary=f"security support ends {date} (last supported {version})"
                    + (f": {details}" if details else ""),
                    origin=where,
                )
            )
        return Parsed(tuple(advisories), tuple(problems))
