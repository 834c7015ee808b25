"""Reading policy files strictly: shared by every feature that loads rules from YAML.

PyYAML's safe loader silently keeps the last of two equal keys; a policy file with a duplicated
key would then mean something other than what its author sees. :class:`StrictLoader` refuses
that, and :class:`At` names the place of an error (``rules[3].match.verbs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from casemate.errors import PolicyError

__all__ = ["At", "StrictLoader", "load_yaml"]


class StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in keys:
            mark = key_node.start_mark
            raise PolicyError(f"line {mark.line + 1}: duplicate key {key!r}")
        keys.add(key)
    return loader.construct_mapping(node)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True)
class At:
    """A location in a policy document, for error messages: ``At(src, "") / "rules" / 3``."""

    source: str
    path: str

    def __truediv__(self, key: str | int) -> At:
        if isinstance(key, int):
            return At(self.source, f"{self.path}[{key}]")
        return At(self.source, f"{self.path}.{key}" if self.path else key)

    def error(self, message: str) -> PolicyError:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return PolicyError(f"{where}: {message}")


def load_yaml(text: str, source: str) -> object:
    """A policy document's YAML (safe, duplicate keys refused); any error is a
    :class:`~casemate.errors.PolicyError` starting with ``source`` (and the line)."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc.message}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
