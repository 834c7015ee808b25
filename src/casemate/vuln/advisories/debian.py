"""The Debian security tracker's JSON (security-tracker.debian.org/tracker/data/json):
``{source package: {CVE: {releases: {codename: {status, fixed_version, urgency}}}}}``."""

from __future__ import annotations

from casemate.vuln.advisories.interface import AdvisoryError, Parsed, load_json
from casemate.vuln.model import Advisory, Range, Severity, State
from casemate.vuln.versions import valid

RELEASES = {"buster": "10", "bullseye": "11", "bookworm": "12", "trixie": "13", "forky": "14"}
_URGENCY = {"unimportant": "low", "not yet assigned": "unknown", "end-of-life": "unknown"}


class DebianTrackerSource:
    kind = "debian-tracker"

    def parse(self, data: bytes, where: str) -> Parsed:
        document = load_json(data, where)
        if not isinstance(document, dict):
            raise AdvisoryError(f"{where}: not a Debian security tracker document (an object)")
        advisories: list[Advisory] = []
        problems: list[str] = []
        for package, issues in document.items():
            if not isinstance(issues, dict):
                raise AdvisoryError(f"{where}: {package}: not a Debian security tracker entry")
            for ident, issue in issues.items():
                releases = issue.get("releases") if isinstance(issue, dict) else None
                if not isinstance(releases, dict):
                    problems.append(f"{where}: {package} {ident}: no releases")
                    continue
                for codename, release in releases.items():
                    number = RELEASES.get(codename)
                    if number is None or not isinstance(release, dict):
                        continue  # sid and experimental have no security support to match
                    advisory = self._advisory(package, ident, number, release, where)
                    if isinstance(advisory, str):
                        problems.append(advisory)
                    elif advisory is not None:
                        advisories.append(advisory)
        return Parsed(tuple(advisories), tuple(problems))

    @staticmethod
    def _advisory(package: str, ident: str, number: str, release: dict[str, object],
                  where: str) -> Advisory | str | None:  # fmt: skip
        status = release.get("status")
        fixed = release.get("fixed_version")
        urgency = str(release.get("urgency") or "")
        severity = Severity.normalize(_URGENCY.get(urgency.rstrip("*"), urgency.rstrip("*")))
        state: State
        ranges: tuple[Range, ...] = ()
        if status == "resolved" and fixed == "0":
            state = "not-affected"
        elif status == "resolved" and isinstance(fixed, str):
            if not valid("dpkg", fixed):
                return f"{where}: {package} {ident}: invalid fixed version {fixed!r}"
            state, ranges = "fixed", (Range(fixed=fixed),)
        elif status in ("open", "undetermined"):
            state = "end-of-support" if urgency == "end-of-life" else "no-fix"
            ranges = (Range(),)
        else:
            return f"{where}: {package} {ident}: unknown status {status!r}"
        return Advisory(
            id=ident,
            ecosystem=f"Debian:{number}",
            package=package,
            state=state,
            ranges=ranges,
            severity=severity,
            origin=where,
        )
