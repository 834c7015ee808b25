"""Reading policy files strictly: shared by every feature that loads rules from YAML.

PyYAML's safe loader silently keeps the last of two equal keys; a policy file with a duplicated
key would then mean something other than what its author sees. :class:`StrictLoader` refuses
that, and :class:`At` names the place of an error (``rules[3].match.verbs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any, ClassVar, Self

import yaml

from casemate.errors import PolicyError

__all__ = ["At", "StrictLoader", "YamlDocument", "load_yaml"]


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


class YamlDocument:
    """The YAML form of a rule document (the command policy, an API rule set): a base of its
    frozen dataclass. The reader and writer live in a module that builds the dataclass (so the
    model cannot import it); ``_yaml_codec`` names that module, imported on first use, which
    has ``document_from_dict(data, *, source)`` (migrate and validate) and
    ``document_to_dict(value)``. ``_yaml_source`` names a document without a source in
    errors."""

    _yaml_codec: ClassVar[str]
    _yaml_source: ClassVar[str]

    @classmethod
    def from_yaml(cls, text: str, *, source: str | None = None) -> Self:
        where = cls._yaml_source if source is None else source
        return cls.from_dict(load_yaml(text, where), source=where)

    @classmethod
    def from_dict(cls, data: object, *, source: str | None = None) -> Self:
        where = cls._yaml_source if source is None else source
        document = import_module(cls._yaml_codec).document_from_dict(data, source=where)
        if not isinstance(document, cls):
            raise TypeError(f"{cls._yaml_codec} did not read a {cls.__name__}")
        return document

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = import_module(self._yaml_codec).document_to_dict(self)
        return document

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
