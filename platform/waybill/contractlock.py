"""The contracts' lock: every registered message's JSON Schema, per type and version, as
committed in ``contracts.lock.json`` (generated: ``make contracts-lock``), and the check
that no registered schema changed incompatibly without a new version.

A version, once published, is a promise to every consumer of its type: its messages sit in
queues, dead letters and the history, and readers on older code meet the new producer's.
So against the lock, for each version:

- a version that is no longer registered, a removed field, a retyped field, a new required
  field (or an optional one made required), a narrowed enum and a tightened constraint (a
  raised minimum, a lowered maximum, a changed pattern) break it;
- a new optional field does not (readers ignore fields they do not know, ``Message``), nor
  does a widened enum or a loosened constraint (for readers on the new code); they, a new
  version and any other edit (a description) update the lock.

Written by hand, on purpose: the JSON Schema compatibility checkers there are are alpha
(jsoncompat) or JavaScript, and none names the field and the consumers it breaks in the
terms of this registry. The schemas compared are pydantic's, a narrow dialect: objects with
``properties``/``required``, ``$ref`` into ``$defs``, ``anyOf``/``oneOf``, ``items``,
``prefixItems``, ``additionalProperties``, ``enum``/``const`` and the bounds above.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import contexts
from .messages import registered_specs

LOCK_FILE = "contracts.lock.json"


@dataclass(frozen=True)
class Change:
    """One difference between the lock and the registry."""

    message_type: str
    version: int
    field: str  # a dotted path into the payload ("lines[].unit_price"), "" for the message
    what: str
    breaking: bool

    def __str__(self) -> str:
        where = f" field {self.field!r}" if self.field else ""
        text = f"{self.message_type} v{self.version}{where}: {self.what}"
        if self.breaking:
            readers = consumers_of(self.message_type)
            text += f"; breaks {', '.join(readers) if readers else 'every reader'} (consumers of {self.message_type})"
        return text


def locked_schemas() -> dict[str, dict[str, Any]]:
    """What the lock file holds for the registry as it is now: type -> version -> entry."""
    locked: dict[str, dict[str, Any]] = {}
    for spec in registered_specs():
        locked.setdefault(spec.type, {})[str(spec.schema_version)] = {
            "kind": str(spec.kind), "schema": spec.schema.model_json_schema(),
        }
    return locked


def lock_text(locked: dict[str, dict[str, Any]]) -> str:
    return json.dumps(locked, indent=2, sort_keys=True) + "\n"


def read_lock(path: Path) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text()) if path.exists() else {}


def changes(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[Change]:
    """Every difference from ``old`` (the lock) to ``new`` (the registry), breaking first."""
    found: list[Change] = []
    for message_type, versions in sorted(old.items()):
        for version, entry in sorted(versions.items(), key=lambda item: int(item[0])):
            current = new.get(message_type, {}).get(version)
            if current is None:
                found.append(Change(message_type, int(version), "", "this version is no longer registered: its "
                                    "messages in queues, dead letters and the history could not be read", True))
                continue
            if current["kind"] != entry["kind"]:
                found.append(Change(message_type, int(version), "", f"kind changed from {entry['kind']} to "
                                    f"{current['kind']}", True))
            found += [Change(message_type, int(version), field, what, breaking) for field, what, breaking in
                      _compare(SchemaDefs.of(entry["schema"]), SchemaDefs.of(current["schema"]), entry["schema"],
                               current["schema"], "")]
    for message_type, versions in sorted(new.items()):
        for version in sorted(set(versions) - set(old.get(message_type, {})), key=int):
            found.append(Change(message_type, int(version), "", "a new version", False))
    return sorted(found, key=lambda change: not change.breaking)


def consumers_of(message_type: str) -> list[str]:
    """The consumers registered here that handle ``message_type``."""
    return sorted(context.name for context in contexts.all_contexts() if message_type in context.consumed_types)


class SchemaDefs:
    """A schema's named definitions, to resolve its ``$ref``s by their last part: pydantic's
    ``#/$defs/X`` (``of`` a schema) or the catalog's ``#/components/schemas/X``."""

    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    @classmethod
    def of(cls, root: dict[str, Any]) -> SchemaDefs:
        return cls(root.get("$defs", {}))

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in node and seen < 32:
            node = self.defs[node["$ref"].rsplit("/", 1)[-1]]
            seen += 1
        return node

    def shape(self, node: dict[str, Any]) -> str:
        """What a value must be, in words that change only when its type does."""
        node = self.resolve(node)
        if "anyOf" in node:
            return " or ".join(sorted({self.shape(option) for option in node["anyOf"]}))
        kind = node.get("type", "any")
        if isinstance(kind, list):
            kind = " or ".join(sorted(kind))
        if "format" in node:
            kind += f" ({node['format']})"
        if kind == "array":
            kind += f" of {self.shape(node.get('items', {}))}"
        return kind


# Constraints a value must meet: raising a lower bound, lowering an upper one, or changing a
# pattern refuses values the old schema accepted.
_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_MAX_DEPTH = 32  # a recursive model's schema refers to itself


def _compare(old_doc: SchemaDefs, new_doc: SchemaDefs, old: dict, new: dict, path: str,
             depth: int = 0) -> Iterator[tuple[str, str, bool]]:
    if depth > _MAX_DEPTH:
        return
    old, new = old_doc.resolve(old), new_doc.resolve(new)
    if (before := old_doc.shape(old)) != (after := new_doc.shape(new)):
        yield path, f"retyped from {before} to {after}", True
        return
    yield from _constraints(old, new, path)
    if "properties" in old or "properties" in new:
        old_fields, new_fields = old.get("properties", {}), new.get("properties", {})
        old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
        for name in old_fields:
            child = f"{path}.{name}" if path else name
            if name not in new_fields:
                yield child, "removed", True
                continue
            if name in new_required and name not in old_required:
                yield child, "made required", True
            yield from _compare(old_doc, new_doc, old_fields[name], new_fields[name], child, depth + 1)
        for name in sorted(new_fields.keys() - old_fields.keys()):
            child = f"{path}.{name}" if path else name
            if name in new_required:
                yield child, "a new required field", True
            else:
                yield child, "a new optional field", False
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            yield from _compare(old_doc, new_doc, old[key], new[key], f"{path}{suffix}", depth + 1)
    for index, (old_item, new_item) in enumerate(zip(old.get("prefixItems", []), new.get("prefixItems", []),
                                                     strict=False)):
        yield from _compare(old_doc, new_doc, old_item, new_item, f"{path}[{index}]", depth + 1)
    # The same shapes (checked above): each old option against the new one of its shape,
    # in their order where several share one (two object models).
    for keyword in ("anyOf", "oneOf"):
        new_options: dict[str, list[dict]] = {}
        for option in new.get(keyword, []):
            new_options.setdefault(new_doc.shape(option), []).append(option)
        for option in old.get(keyword, []):
            if candidates := new_options.get(old_doc.shape(option)):
                yield from _compare(old_doc, new_doc, option, candidates.pop(0), path, depth + 1)


def _constraints(old: dict, new: dict, path: str) -> Iterator[tuple[str, str, bool]]:
    """Narrowed enums (a single-value ``const`` is an enum of one) and tightened bounds."""
    allowed_before, allowed_now = _allowed(old), _allowed(new)
    if allowed_now is not None:
        if allowed_before is None:
            yield path, f"now limited to {', '.join(map(repr, allowed_now))}", True
        elif dropped := [value for value in allowed_before if value not in allowed_now]:
            yield path, f"enum narrowed: {', '.join(map(repr, dropped))} no longer allowed", True
    for key in _LOWER_BOUNDS:
        if new.get(key) is not None and (old.get(key) is None or new[key] > old[key]):
            yield path, f"{key} tightened from {old.get(key)} to {new[key]}", True
    for key in _UPPER_BOUNDS:
        if new.get(key) is not None and (old.get(key) is None or new[key] < old[key]):
            yield path, f"{key} tightened from {old.get(key)} to {new[key]}", True
    for key in ("pattern", "multipleOf"):
        if new.get(key) is not None and new.get(key) != old.get(key):
            yield path, f"{key} changed from {old.get(key)!r} to {new[key]!r}", True


def _allowed(node: dict) -> list | None:
    if "const" in node:
        return [node["const"]]
    return node.get("enum")
