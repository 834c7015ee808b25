"""Advisory documents in each format, shaped like the real feeds' records."""

from __future__ import annotations

import json

OSV_DSA = {
    "id": "DSA-5764-1",
    "summary": "openssl - security update",
    "modified": "2024-09-04T00:00:00Z",
    "upstream": ["CVE-2024-5535", "CVE-2024-6119"],
    "affected": [
        {
            "package": {"ecosystem": "Debian:12", "name": "openssl"},
            "ranges": [
                {"type": "ECOSYSTEM",
                 "events": [{"introduced": "0"}, {"fixed": "3.0.14-1~deb12u2"}]}
            ],
            "versions": ["3.0.11-1~deb12u2"],
        },
        {
            "package": {"ecosystem": "Debian:11", "name": "openssl"},
            "ranges": [{"type": "ECOSYSTEM",
                        "events": [{"introduced": "0"}, {"fixed": "1.1.1w-0+deb11u2"}]}],
        },
    ],
}  # fmt: skip

OSV_ALPINE = {
    "id": "ALPINE-CVE-2024-6119",
    "aliases": ["CVE-2024-6119"],
    "affected": [
        {
            "package": {"ecosystem": "Alpine:v3.20", "name": "openssl"},
            "ranges": [{"type": "ECOSYSTEM",
                        "events": [{"introduced": "0"}, {"fixed": "3.3.2-r0"}]}],
        }
    ],
}  # fmt: skip

OSV_UNKNOWN = {
    "id": "PYSEC-2024-1",
    "affected": [{"package": {"ecosystem": "PyPI", "name": "x"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}],
}  # fmt: skip

TRACKER = {
    "openssl": {
        "CVE-2024-5535": {
            "description": "SSL_select_next_proto buffer overread",
            "scope": "remote",
            "releases": {
                "bookworm": {"status": "resolved", "fixed_version": "3.0.14-1~deb12u2",
                             "urgency": "not yet assigned",
                             "repositories": {"bookworm": "3.0.15-1~deb12u1"}},
                "sid": {"status": "resolved", "fixed_version": "3.3.1-6", "urgency": "low"},
            },
        },
        "CVE-2099-0001": {
            "releases": {"bookworm": {"status": "open", "urgency": "high"}},
        },
    },
    "util-linux": {
        "CVE-2024-28085": {
            "releases": {"bookworm": {"status": "resolved",
                                      "fixed_version": "2.38.1-5+deb12u1", "urgency": "medium"}},
        },
        "CVE-2022-0563": {
            "releases": {"bookworm": {"status": "resolved", "fixed_version": "0",
                                      "urgency": "unimportant"}},
        },
    },
    "glibc": {
        "CVE-2010-4756": {
            "releases": {"bookworm": {"status": "open", "urgency": "end-of-life"}},
        },
    },
}  # fmt: skip

SECDB = {
    "apkurl": "{{urlprefix}}/{{distroversion}}/{{reponame}}/{{arch}}/{{pkg.name}}-{{pkg.ver}}.apk",
    "archs": ["x86_64"],
    "distroversion": "v3.20",
    "reponame": "main",
    "urlprefix": "https://dl-cdn.alpinelinux.org/alpine",
    "packages": [
        {"pkg": {"name": "openssl", "secfixes": {
            "3.3.2-r0": ["CVE-2024-6119"],
            "3.3.1-r1": ["CVE-2024-5535 ALPINE-13661"],
            "0": ["CVE-2022-1343"],
        }}},
        {"pkg": {"name": "busybox", "secfixes": {"1.36.1-r29": ["CVE-2023-42366"]}}},
    ],
}  # fmt: skip


def dumps(document: object) -> bytes:
    return json.dumps(document).encode()
