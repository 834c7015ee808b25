"""The one error the edge request parser raises: a request it will not pass to dockerd.

Every refusal carries the HTTP status to answer with, a stable machine-readable ``code`` and a
reason a user can act on. The driver answers with Docker's own error JSON
(:func:`casemate.edge.dockerapi.docker_error`) and then closes the connection: after a refusal the
byte stream is never trusted again, so there is no attempt to resynchronise framing.
"""

from __future__ import annotations

from enum import StrEnum

from casemate.errors import CasemateError


class RefusalCode(StrEnum):
    """Stable codes for parser refusals (audit logs and tests match on these)."""

    # framing and head
    MALFORMED_HTTP = "malformed_http"
    LINE_ENDING = "line_ending"
    HEAD_CHARS = "head_chars"
    OBS_FOLD = "obs_fold"
    HEADER_NAME = "header_name"
    DUPLICATE_HEADER = "duplicate_header"
    HEAD_TOO_LARGE = "head_too_large"
    TOO_MANY_HEADERS = "too_many_headers"
    HTTP_VERSION = "http_version"
    METHOD = "method"
    CONTENT_LENGTH = "content_length"
    LENGTH_AND_CHUNKED = "length_and_chunked"
    TRANSFER_ENCODING = "transfer_encoding"
    CONNECTION = "connection"
    UPGRADE = "upgrade"
    EXPECT = "expect"
    TRUNCATED = "truncated"
    PIPELINING = "pipelining"
    TRAILERS = "trailers"
    READER_STATE = "reader_state"
    # body
    BODY_NOT_ALLOWED = "body_not_allowed"
    BODY_TOO_LARGE = "body_too_large"
    CONTENT_TYPE = "content_type"
    JSON_MALFORMED = "json_malformed"
    JSON_ENCODING = "json_encoding"
    JSON_DUPLICATE_KEY = "json_duplicate_key"
    JSON_KEY = "json_key"
    JSON_CONSTANT = "json_constant"
    JSON_NUMBER = "json_number"
    JSON_DEPTH = "json_depth"
    JSON_TOP_LEVEL = "json_top_level"
    # target
    TARGET_FORM = "target_form"
    FRAGMENT = "fragment"
    PATH_SEGMENT = "path_segment"
    PATH_PERCENT = "path_percent"
    PATH_CHARS = "path_chars"
    API_VERSION = "api_version"
    API_VERSION_TOO_OLD = "api_version_too_old"
    API_VERSION_TOO_NEW = "api_version_too_new"
    QUERY = "query"
    QUERY_DUPLICATE = "query_duplicate"
    UNKNOWN_ROUTE = "unknown_route"
    BAD_PARAMETER = "bad_parameter"


class EdgeRefused(CasemateError):
    """The edge guard will not forward this request; ``status`` is the HTTP status to answer."""

    title = "Request refused"

    def __init__(self, message: str, *, code: RefusalCode, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    def __repr__(self) -> str:
        return f"EdgeRefused(code={self.code.value!r}, status={self.status}, {self.message!r})"
