"""What the edge reads from a Docker request beyond its head: the ``Content-Type`` rules
(Go's ``mime.ParseMediaType``, dockerd's ``CheckForJSON``, no form bodies) and the values it
derives from the query (the image a pull fetches, ``repo``/``tag`` of a tag, commit or import).
Every refusal is an :class:`~casemate.edge.refusal.EdgeRefused`."""

from __future__ import annotations

import re
from typing import Final

from casemate.edge.refusal import EdgeRefused, RefusalCode
from casemate.edge.routes import Action, BodyKind
from casemate.edge.target import Query
from casemate.risks.imageref import ImageRef, InvalidImageReference, is_digest, parse_image_ref

__all__ = [
    "FORM_MEDIA_TYPES",
    "check_content_type",
    "check_json_content_type",
    "derived_params",
    "parse_media_type",
    "pull_reference",
    "resolve_images_create",
]


def _refused(message: str, code: RefusalCode, status: int = 400) -> EdgeRefused:
    return EdgeRefused(message, code=code, status=status)


# --- content type --------------------------------------------------------------------------------

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE_RE: Final = re.compile(rf"({_TOKEN})/({_TOKEN})")
_PARAM_RE: Final = re.compile(rf"({_TOKEN})=({_TOKEN}|\"[^\"\\]*\")")
FORM_MEDIA_TYPES: Final = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type like Go's ``mime.ParseMediaType``; refuse what it would refuse."""
    main, *raw_params = value.split(";")
    m = _MEDIA_TYPE_RE.fullmatch(main.strip())
    if m is None:
        raise _refused(f"malformed Content-Type {value[:64]!r}", RefusalCode.CONTENT_TYPE, 415)
    params: dict[str, str] = {}
    for raw in raw_params:
        if not raw.strip():
            continue
        p = _PARAM_RE.fullmatch(raw.strip())
        if p is None:
            raise _refused(f"malformed Content-Type {value[:64]!r}", RefusalCode.CONTENT_TYPE, 415)
        key = p[1].lower()
        if key in params:
            raise _refused(
                f"Content-Type repeats the parameter {key!r}", RefusalCode.CONTENT_TYPE, 415
            )
        params[key] = p[2].strip('"')
    return m[0].lower(), params


def check_content_type(value: str | None) -> None:
    """Head-time check, every route: parseable, and never a form type."""
    if value is None:
        return
    media_type, _ = parse_media_type(value)
    if media_type in FORM_MEDIA_TYPES:
        raise _refused(
            f"Content-Type {media_type} is not accepted: dockerd would read form fields from "
            "the body and let them override the query",
            RefusalCode.CONTENT_TYPE,
            415,
        )


def check_json_content_type(value: str | None) -> None:
    """For a non-empty JSON body (dockerd's ``CheckForJSON``, minus foreign charsets)."""
    if value is None:
        raise _refused(
            "a JSON body needs Content-Type: application/json", RefusalCode.CONTENT_TYPE, 415
        )
    media_type, params = parse_media_type(value)
    if media_type != "application/json":
        raise _refused(
            f"Content-Type must be application/json, not {media_type}",
            RefusalCode.CONTENT_TYPE,
            415,
        )
    charset = params.pop("charset", "utf-8").lower()
    if charset != "utf-8" or params:
        raise _refused(
            "Content-Type for JSON may only carry charset=utf-8", RefusalCode.CONTENT_TYPE, 415
        )


# --- query-derived parameters --------------------------------------------------------------------


def resolve_images_create(query: Query) -> tuple[Action, BodyKind]:
    """``POST /images/create`` pulls when ``fromImage`` is set, else imports (``fromSrc``)."""
    from_image = query.get("fromImage") or ""
    from_src = query.get("fromSrc") or ""
    if from_image and from_src:
        raise _refused(
            "both fromImage and fromSrc given; dockerd would silently ignore fromSrc",
            RefusalCode.BAD_PARAMETER,
        )
    if from_image:
        return Action.PULL, BodyKind.NONE
    return Action.IMPORT, BodyKind.STREAM if from_src == "-" else BodyKind.NONE


_TAG_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def derived_params(action: Action, query: Query) -> dict[str, str]:
    if action is Action.PULL:
        return {"image": pull_reference(query.get("fromImage") or "", query.get("tag") or "")}
    if action is Action.IMPORT:
        out = {"from_src": query.get("fromSrc") or ""}
        out.update(_repo_tag(query))
        return out
    if action is Action.TAG:
        if not query.get("repo"):
            raise _refused("tag needs a repo parameter", RefusalCode.BAD_PARAMETER)
        return _repo_tag(query)
    if action is Action.COMMIT:
        out = {"container": query.get("container") or ""}
        out.update(_repo_tag(query))
        return out
    if action in (Action.ARCHIVE_GET, Action.ARCHIVE_HEAD, Action.ARCHIVE_PUT):
        return {"path": query.get("path") or ""}
    return {}


def _ref(text: str) -> ImageRef:
    try:
        return parse_image_ref(text)
    except InvalidImageReference as e:
        raise _refused(f"invalid image reference {text[:200]!r}", RefusalCode.BAD_PARAMETER) from e


def pull_reference(from_image: str, tag: str) -> str:
    """The reference dockerd pulls for ``fromImage`` + ``tag`` (a tag or a digest)."""
    ref = _ref(from_image)
    if ref.is_id:
        raise _refused("cannot pull an image ID", RefusalCode.BAD_PARAMETER)
    if not tag:
        return from_image
    if ref.tag is not None or ref.digest is not None:
        raise _refused(
            "fromImage already carries a tag or digest and a tag parameter was given too",
            RefusalCode.BAD_PARAMETER,
        )
    if is_digest(tag):
        return f"{from_image}@{tag}"
    if not _TAG_RE.fullmatch(tag):
        raise _refused(f"invalid tag {tag[:64]!r}", RefusalCode.BAD_PARAMETER)
    return f"{from_image}:{tag}"


def _repo_tag(query: Query) -> dict[str, str]:
    repo = query.get("repo") or ""
    tag = query.get("tag") or ""
    if not repo:
        if tag:
            raise _refused("tag given without repo", RefusalCode.BAD_PARAMETER)
        return {}
    ref = _ref(repo)
    if ref.is_id or ref.digest is not None:
        raise _refused("repo must be a repository name", RefusalCode.BAD_PARAMETER)
    if tag and ref.tag is not None:
        raise _refused(
            "repo already carries a tag and tag was given too", RefusalCode.BAD_PARAMETER
        )
    if tag and not _TAG_RE.fullmatch(tag):
        raise _refused(f"invalid tag {tag[:64]!r}", RefusalCode.BAD_PARAMETER)
    return {"repo": repo, "tag": tag or ref.tag or "latest"}
