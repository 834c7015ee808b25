"""Resources: CPU and memory requests and limits per container; LimitRange and ResourceQuota
per namespace (a namespace rule: it needs every object of the namespace)."""

from __future__ import annotations

from collections.abc import Iterator

from casemate.posture.model import Hit, Settings, Severity, Subject
from casemate.posture.namespaces import NamespaceFacts
from casemate.posture.podview import mapping
from casemate.posture.rules.registry import Family

FAMILY = Family("resources")
rule = FAMILY.rule


def _missing(subject: Subject, section: str, resource: str) -> Iterator[Hit]:
    for pod in subject.pods:
        for c in pod.containers:
            if c.list_name == "ephemeralContainers":
                continue  # the API forbids resources on ephemeral containers
            values = mapping(mapping(c.obj.get("resources")).get(section))
            if values.get(resource) in (None, ""):
                yield Hit(
                    (*c.path, "resources", section, resource),
                    None,
                    f"{c.label} sets no {resource} {section.removesuffix('s')}",
                )


@rule(
    "resources.cpu-requests",
    Severity.LOW,
    "No CPU request",
    """Without a CPU request the scheduler places the pod blind and the container gets the
    smallest share under contention.""",
    "Set `resources.requests.cpu` (e.g. 100m) from observed usage.",
)
def cpu_requests(subject: Subject, settings: Settings) -> Iterator[Hit]:
    yield from _missing(subject, "requests", "cpu")


@rule(
    "resources.memory-requests",
    Severity.LOW,
    "No memory request",
    """Without a memory request the pod is among the first evicted and may be packed onto a
    node without room for it.""",
    "Set `resources.requests.memory` (e.g. 128Mi) from observed usage.",
)
def memory_requests(subject: Subject, settings: Settings) -> Iterator[Hit]:
    yield from _missing(subject, "requests", "memory")


@rule(
    "resources.cpu-limits",
    Severity.LOW,
    "No CPU limit",
    """A container without a CPU limit can take every idle core of its node and starve its
    neighbours' bursts.""",
    "Set `resources.limits.cpu`, or a namespace LimitRange default.",
)
def cpu_limits(subject: Subject, settings: Settings) -> Iterator[Hit]:
    yield from _missing(subject, "limits", "cpu")


@rule(
    "resources.memory-limits",
    Severity.MEDIUM,
    "No memory limit",
    """A container without a memory limit can exhaust its node's memory (a leak or an attack)
    and get other pods killed.""",
    "Set `resources.limits.memory`, or a namespace LimitRange default.",
)
def memory_limits(subject: Subject, settings: Settings) -> Iterator[Hit]:
    yield from _missing(subject, "limits", "memory")


@rule(
    "resources.namespace-limitrange",
    Severity.LOW,
    "Namespace without a LimitRange",
    """Without a LimitRange, containers that set no requests or limits get none: one workload
    can starve the rest of the namespace's nodes.""",
    "Create a LimitRange with default requests and limits for containers.",
    scope="namespace",
)
def namespace_limitrange(facts: NamespaceFacts, settings: Settings) -> Iterator[Hit]:
    if facts.workloads and not facts.has_limit_range:
        yield Hit((), None, f"namespace {facts.namespace} has workloads but no LimitRange")


@rule(
    "resources.namespace-quota",
    Severity.LOW,
    "Namespace without a ResourceQuota",
    """Without a ResourceQuota nothing caps what a namespace may request in total: a runaway
    or hostile deployment can take the whole cluster.""",
    "Create a ResourceQuota for CPU, memory and object counts.",
    scope="namespace",
)
def namespace_quota(facts: NamespaceFacts, settings: Settings) -> Iterator[Hit]:
    if facts.workloads and not facts.has_quota:
        yield Hit((), None, f"namespace {facts.namespace} has workloads but no ResourceQuota")
