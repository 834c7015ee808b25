"""The cloud approval policy, pure: rules (globs over gateway, caller, action, image, digest),
image grants, and :func:`evaluate`, which the registry applies to each request."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from casemate.edge import messages as m
from casemate.errors import (
    InvalidInput,
)
from casemate.risks.imageref import InvalidImageReference, parse_image_ref, split_repository

_GLOB_CHARS: Final = frozenset("*?[")


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    MANUAL = "manual"


def _check_glob(value: str, name: str, max_len: int = 200) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= max_len or not value.isprintable():
        raise InvalidInput(f"{name} must be a glob of 1 to {max_len} printable characters")
    return value


def image_pattern(text: str) -> str:
    """A rule's image glob: ``*``, a glob over normalised names, or a name (normalised; a tag
    is dropped: rules match repositories, and what they let in is pinned by digest)."""
    _check_glob(text, "image", 512)
    if _GLOB_CHARS & set(text):
        return text
    try:
        name, _tag, digest = split_repository(text)
    except InvalidImageReference as e:
        raise InvalidInput(f"image: {e.message}") from None
    if digest is not None:
        raise InvalidInput("image: give the digest with --digest, not in the image name")
    return name


@dataclass(frozen=True, kw_only=True)
class Rule:
    """An automatic approval rule; every field but ``effect`` is a glob (``*``: anything)."""

    id: int
    effect: Effect
    gateway: str = "*"
    caller: str = "*"
    action: str = "*"
    image: str = "*"
    digest: str = "*"
    note: str = ""
    position: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "effect", Effect(self.effect))
        for name in ("gateway", "caller", "action", "digest"):
            _check_glob(getattr(self, name), name)
        _check_glob(self.image, "image", 512)

    def matches(self, subject: Subject) -> bool:
        return (
            fnmatch.fnmatchcase(subject.gateway_id, self.gateway)
            and fnmatch.fnmatchcase(subject.caller, self.caller)
            and fnmatch.fnmatchcase(subject.action, self.action)
            and _optional_match(subject.image, self.image)
            and _optional_match(subject.digest, self.digest)
        )

    def describe(self) -> str:
        parts = [
            f"{k}={v}"
            for k, v in (
                ("gateway", self.gateway),
                ("caller", self.caller),
                ("action", self.action),
                ("image", self.image),
                ("digest", self.digest),
            )
            if v != "*"
        ]
        return f"{self.effect} " + (" ".join(parts) or "everything")


def _optional_match(value: str | None, pattern: str) -> bool:
    return pattern == "*" or (value is not None and fnmatch.fnmatchcase(value, pattern))


@dataclass(frozen=True, kw_only=True)
class Subject:
    """What the policy sees of a request: the image as a normalised repository name."""

    gateway_id: str
    caller: str
    action: str
    image: str | None
    digest: str | None


@dataclass(frozen=True, kw_only=True)
class RuleOutcome:
    effect: Effect
    rule: str
    reason: str


def subject_of(request: m.AuthorizationRequest) -> Subject | RuleOutcome:
    """The request's subject, or a deny if its image reference cannot be parsed."""
    image: str | None = None
    digest = request.digest
    if request.image is not None:
        try:
            ref = parse_image_ref(request.image)
        except InvalidImageReference:
            return RuleOutcome(
                effect=Effect.DENY, rule="cloud:image", reason="the image reference is invalid"
            )
        if not ref.is_id:
            image = ref.name
            if ref.digest is not None:
                if digest is not None and digest != ref.digest:
                    return RuleOutcome(
                        effect=Effect.DENY,
                        rule="cloud:image",
                        reason="the image reference and the digest disagree",
                    )
                digest = ref.digest
    return Subject(
        gateway_id=request.gateway_id,
        caller=request.caller,
        action=request.action,
        image=image,
        digest=digest,
    )


def evaluate(
    rules: Sequence[Rule], images: Mapping[str, m.ImageGrant], subject: Subject
) -> RuleOutcome:
    """Image records restrict, then the first matching rule decides; nothing matches: deny."""
    grant = images.get(subject.image) if subject.image is not None else None
    if grant is not None and not grant.allows(subject.caller, subject.action, subject.digest):
        if subject.action not in grant.actions:
            why = f"{subject.action} is not an allowed action"
        elif grant.users and subject.caller not in grant.users:
            why = f"{subject.caller} is not an allowed user"
        else:
            why = "the digest is not in the allowlist"
        return RuleOutcome(
            effect=Effect.DENY,
            rule=f"image:{grant.name}"[:200],
            reason=f"{why} for image {grant.name}",
        )
    for rule in rules:
        if rule.matches(subject):
            return RuleOutcome(
                effect=rule.effect,
                rule=f"rule:{rule.id}",
                reason=f"rule {rule.id}: {rule.note or rule.describe()}"[:1000],
            )
    return RuleOutcome(effect=Effect.DENY, rule="cloud:default", reason="no rule allows this")
