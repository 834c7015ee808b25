"""The API-level rules in force: the built-in set with the site's ``api_rules`` over it.

Operators change the API proxy's rules in the same versioned document as the command policy
(``casemate policy import``, ``PUT /api/v1/policies/commands``): an ``api_rules`` section
holding a :mod:`casemate.kubeproxy.rules` rule set (``version: 1``). Its rules are merged
over :func:`~casemate.kubeproxy.rules.default_rules` (a rule with an id already present
replaces it, e.g. ``enabled: false`` to switch a default off) and its ``default_action``
applies. The section is validated before a version is stored (:func:`check_api_rules`); if a
stored version's section stops validating, :func:`effective_api_rules` raises and the proxy
refuses every request (fail closed) until a valid version is stored. Without the section the
built-in rules apply. ``casemate policy api-rules`` and ``GET
/api/v1/policies/commands/api-rules`` show the rules in force.
"""

from __future__ import annotations

import threading
from typing import Final

from casemate.bastion.policy import Policy
from casemate.kubeproxy.rules import ApiRules, default_rules

__all__ = ["API_RULES_SOURCE", "check_api_rules", "effective_api_rules"]

API_RULES_SOURCE: Final = "policy: api_rules"

_lock = threading.Lock()
_last: tuple[Policy, ApiRules] | None = None


def effective_api_rules(policy: Policy) -> ApiRules:
    """The rules in force under ``policy`` (cached for the last policy object seen). Raises
    ``PolicyError`` for an invalid ``api_rules`` section."""
    global _last
    with _lock:
        if _last is not None and _last[0] is policy:
            return _last[1]
    if policy.api_rules is None:
        rules = default_rules()
    else:
        site = ApiRules.from_dict(dict(policy.api_rules), source=API_RULES_SOURCE)
        rules = default_rules().merged(site)
    with _lock:
        _last = (policy, rules)
    return rules


def check_api_rules(policy: Policy) -> None:
    """Refuse (``PolicyError``) a policy whose ``api_rules`` section is not a valid rule
    set; passed to :meth:`PolicyStore.put <casemate.bastion.policystore.PolicyStore.put>`."""
    effective_api_rules(policy)
