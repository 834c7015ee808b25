"""Docker image references, parsed the way dockerd parses them (distribution/reference).

``nginx`` → ``docker.io/library/nginx``; ``registry.example:5000/team/app:1.0@sha256:…`` keeps its
registry. A full 64-hex string or ``sha256:<hex>`` is an image ID. Anything the grammar does not
accept raises :class:`InvalidImageReference`; callers translate it into their own refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from casemate.errors import InvalidInput

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
NAME_TOTAL_LENGTH_MAX = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REMAINDER_RE = re.compile(
    rf"(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-zA-Z]+))?"
)
_FULL_ID_RE = re.compile(r"[a-f0-9]{64}")
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST_RE = re.compile(r"(?P<algorithm>sha256|sha384|sha512):(?P<hex>[a-f0-9]+)")


class InvalidImageReference(InvalidInput):
    """The string is not an image reference dockerd would accept."""


def is_digest(value: str) -> bool:
    """``sha256:<64 lowercase hex>`` (or sha384/sha512 with their lengths)."""
    match = _DIGEST_RE.fullmatch(value)
    return match is not None and len(match["hex"]) == _DIGEST_HEX_LENGTH[match["algorithm"]]


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A parsed reference: either a repository name (+ tag/digest) or a bare image ID."""

    domain: str = ""
    path: str = ""
    tag: str | None = None
    digest: str | None = None
    image_id: str | None = None

    @property
    def is_id(self) -> bool:
        return self.image_id is not None

    @property
    def name(self) -> str:
        """Normalised repository name (``docker.io/library/nginx``); empty for image IDs."""
        return f"{self.domain}/{self.path}" if self.path else ""

    @property
    def pinned_digest(self) -> str | None:
        """The content digest this reference pins, if any (IDs pin their config digest)."""
        return self.digest or self.image_id

    def __str__(self) -> str:
        if self.image_id is not None:
            return self.image_id
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_image_ref(text: str) -> ImageRef:
    """Parse ``text`` like dockerd's ``ParseAnyReference`` + ``ParseNormalizedNamed``."""
    if _FULL_ID_RE.fullmatch(text):
        return ImageRef(image_id=f"sha256:{text}")
    if is_digest(text):
        return ImageRef(image_id=text)
    domain, remainder = _split_domain(text)
    match = _REMAINDER_RE.fullmatch(remainder)
    if match is None or (domain and not _DOMAIN_RE.fullmatch(domain)):
        raise InvalidImageReference(f"invalid image reference {text!r}")
    digest = match["digest"]
    if digest is not None and not is_digest(digest):
        raise InvalidImageReference(f"invalid digest in image reference {text!r}")
    path = match["path"]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if not domain:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidImageReference(f"image name too long in {text!r}")
    return ImageRef(domain=domain, path=path, tag=match["tag"], digest=digest)


def _split_domain(text: str) -> tuple[str, str]:
    """The registry part, decided like distribution's ``splitDockerDomain``."""
    first, sep, rest = text.partition("/")
    if not sep:
        return "", text
    looks_like_domain = (
        any(c in first for c in ".:") or first == "localhost" or first.lower() != first
    )
    return (first, rest) if looks_like_domain else ("", text)


def normalise_repository(text: str) -> str:
    """The normalised repository name of ``text``; refuses tags, digests and image IDs."""
    ref = parse_image_ref(text)
    if ref.is_id or ref.tag is not None or ref.digest is not None:
        raise InvalidImageReference(f"expected a repository name without tag or digest: {text!r}")
    return ref.name


def split_repository(text: str) -> tuple[str, str | None, str | None]:
    """``(normalised repository, tag, digest)`` of a reference that names a repository (with
    or without a tag or digest), for commands that take a repository but are often given
    ``name:tag``; refuses image IDs."""
    ref = parse_image_ref(text)
    if ref.is_id:
        raise InvalidImageReference(f"expected a repository name, not an image ID: {text!r}")
    return ref.name, ref.tag, ref.digest
