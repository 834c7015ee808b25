"""Every event, in one home: frozen, versioned dataclasses with a registry of kinds.

An :class:`Event` is what the audit log stores (``kind``, ``version`` and the event's fields as
``details``). The base and the registry live in :mod:`casemate.events.base`; each feature's
events in a module of its own here (``identity``, ``k8s``, ``bastion``, ``kubeproxy``,
``edge``, ``vuln``, ``posture``), all re-exported from this package. A second class for a kind,
or a :class:`GenericEvent` kind registered twice, is refused at import. Events must never carry
secrets: callers pass redacted values.
"""

from casemate.events.base import (
    Event,
    GenericEvent,
    event_class,
    generic_kinds,
    is_registered,
    kinds,
    migrate_details,
    register_kind,
)
from casemate.events.bastion import (
    RECORDING_ACCESSED,
    BastionSessionEnded,
    BastionSessionShared,
    BastionSessionStarted,
    CommandDecided,
    CommandFinished,
    CommandPolicyChanged,
    ContainerInput,
    RecordingClosed,
    ReviewDecided,
    ReviewRequested,
)
from casemate.events.edge import (
    ContainerStopped,
    DockerCallDecided,
    DockerCallFinished,
    DockerPullVerified,
    EdgeDecisionIssued,
    EdgeGatewayChanged,
    EdgePolicyChanged,
    EdgeProxyConfigChanged,
    EdgeRecovered,
    EdgeReportReceived,
)
from casemate.events.identity import (
    ApiRequestAudited,
    GroupChanged,
    LoggedOut,
    LoginAttempted,
    ServerStarted,
    SshKeyChanged,
    TokenChanged,
    UserChanged,
    VaultRotated,
)
from casemate.events.k8s import (
    ClusterChanged,
    GrantChanged,
    SystemAccountChanged,
)
from casemate.events.kubeproxy import (
    CREDENTIAL_CHANGED,
    GatewayRecovered,
    KubeApiRequestAudited,
    KubeApiRequestDecided,
)
from casemate.events.posture import (
    FINDING,
    PostureExceptionChanged,
)
from casemate.events.vuln import (
    VulnRolloutStep,
)

__all__ = [
    "ApiRequestAudited",
    "BastionSessionEnded",
    "BastionSessionShared",
    "BastionSessionStarted",
    "CREDENTIAL_CHANGED",
    "ClusterChanged",
    "CommandDecided",
    "CommandFinished",
    "CommandPolicyChanged",
    "ContainerInput",
    "ContainerStopped",
    "DockerCallDecided",
    "DockerCallFinished",
    "DockerPullVerified",
    "EdgeDecisionIssued",
    "EdgeGatewayChanged",
    "EdgePolicyChanged",
    "EdgeProxyConfigChanged",
    "EdgeRecovered",
    "EdgeReportReceived",
    "Event",
    "FINDING",
    "GatewayRecovered",
    "GenericEvent",
    "GrantChanged",
    "GroupChanged",
    "KubeApiRequestAudited",
    "KubeApiRequestDecided",
    "LoggedOut",
    "LoginAttempted",
    "PostureExceptionChanged",
    "RECORDING_ACCESSED",
    "RecordingClosed",
    "ReviewDecided",
    "ReviewRequested",
    "ServerStarted",
    "SshKeyChanged",
    "SystemAccountChanged",
    "TokenChanged",
    "UserChanged",
    "VaultRotated",
    "VulnRolloutStep",
    "event_class",
    "generic_kinds",
    "is_registered",
    "kinds",
    "migrate_details",
    "register_kind",
]
