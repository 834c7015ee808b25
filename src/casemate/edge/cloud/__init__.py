"""The cloud side of the edge guard: gateway registry, approval policy, decisions, reports.

:class:`CloudRegistry` holds the state (synchronous; used by the service and the CLI);
:class:`CloudService` connects it to the MQTT broker. Only one service should run per
database.

Approval policy, in order (pure: :func:`evaluate` over frozen :class:`Rule` and
:class:`~casemate.edge.messages.ImageGrant` data):

1. The gateway must be approved (a pending or revoked gateway is denied, with a signed reason).
2. If an image record exists for the request's image (matched on the normalised repository
   name), the caller, action and digest must be allowed by it. Image records only restrict.
3. The first rule (by position, then id) whose globs match the gateway id, caller, action,
   image name and digest decides: ``allow``, ``deny`` or ``manual``.
4. No rule matches: deny.

A ``manual`` request is stored as ``held``; the gateway is told so (a signed ``held`` decision)
and may wait up to ``hold_seconds``. ``approve``/``deny`` (API, CLI) decide it; the service
loop publishes the signed decision. Held requests past their time become ``expired``.

Reports are accepted from approved gateways only (stored once per ``report_id``, audited as
``edge.report``); a pending gateway keeps them in its outbox until it learns of its approval.

Registration: a gateway sends a self-signed ``Register``; the cloud derives the link key
(X25519 + HKDF) and stores it in the vault. The gateway is ``pending`` until an admin approves
it, unless it presents a valid single-use enrolment token (stored as SHA-256; tokens carry
256 bits of entropy). Enrolment tokens travel in the Register message: use TLS to the broker
and an ACL so that only the cloud may subscribe to ``casemate/v1/register``.
"""

from casemate.edge.cloud.policy import (
    Effect,
    Rule,
    RuleOutcome,
    Subject,
    evaluate,
    image_pattern,
    subject_of,
)
from casemate.edge.cloud.records import CloudKeys, GatewayInfo, PendingApproval, ReportInfo
from casemate.edge.cloud.registry import CloudRegistry
from casemate.edge.cloud.service import CloudService, publish_image_records, push_once

__all__ = [
    "CloudKeys",
    "CloudRegistry",
    "CloudService",
    "Effect",
    "GatewayInfo",
    "PendingApproval",
    "ReportInfo",
    "Rule",
    "RuleOutcome",
    "Subject",
    "evaluate",
    "image_pattern",
    "publish_image_records",
    "push_once",
    "subject_of",
]
