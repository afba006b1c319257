"""The contracts' lock: every registered message's JSON Schema, per type and version, as
committed in ``contracts.lock.json`` (generated: ``make contracts-lock``), and the check
that no registered schema changed incompatibly without a new version.

A version, once published, is a promise to every consumer of its type: its messages sit in
queues, dead letters and the history, and readers on older code meet the new producer's.
So against the lock, for each version:

- a version that is no longer registered, a removed field, a retyped field, a new required
  field (or an optional one made required) and a narrowed enum break it;
- a new optional field does not (readers ignore fields they do not know, ``Message``), and
  updates the lock; so does a new version.

Written by hand, on purpose: the JSON Schema compatibility checkers there are are alpha
(jsoncompat) or JavaScript, and none names the field and the consumers it breaks in the
terms of this registry. The schemas compared are pydantic's, a narrow dialect: objects with
``properties``/``required``, ``$ref`` into ``$defs``, ``anyOf``, ``items``, ``enum``.
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
                      _compare(_Schema(entry["schema"]), _Schema(current["schema"]), entry["schema"],
                               current["schema"], "")]
    for message_type, versions in sorted(new.items()):
        for version in sorted(set(versions) - set(old.get(message_type, {})), key=int):
            found.append(Change(message_type, int(version), "", "a new version", False))
    return sorted(found, key=lambda change: not change.breaking)


def consumers_of(message_type: str) -> list[str]:
    """The consumers registered here that handle ``message_type``."""
    return sorted(context.name for context in contexts.all_contexts() if message_type in context.consumed_types)


class _Schema:
    """A schema document, for resolving its ``$ref``s."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.defs = root.get("$defs", {})

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in node and seen < 32:
            node = self.defs[node["$ref"].rsplit("/", 1)[-1]]
            seen += 1
        return node


def _compare(old_doc: _Schema, new_doc: _Schema, old: dict, new: dict, path: str) -> Iterator[tuple[str, str, bool]]:
    old, new = old_doc.resolve(old), new_doc.resolve(new)
    if (before := _shape(old_doc, old)) != (after := _shape(new_doc, new)):
        yield path, f"retyped from {before} to {after}", True
        return
    if "enum" in old:
        if dropped := [value for value in old["enum"] if value not in new.get("enum", [])]:
            yield path, f"enum narrowed: {', '.join(map(repr, dropped))} no longer allowed", True
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
            yield from _compare(old_doc, new_doc, old_fields[name], new_fields[name], child)
        for name in new_fields.keys() - old_fields.keys():
            child = f"{path}.{name}" if path else name
            if name in new_required:
                yield child, "a new required field", True
            else:
                yield child, "a new optional field", False
    if "items" in old and "items" in new:
        yield from _compare(old_doc, new_doc, old["items"], new["items"], f"{path}[]")
    # The same shapes (checked above): each old option against the new one of its shape.
    new_options = {_shape(new_doc, option): option for option in new.get("anyOf", [])}
    for option in old.get("anyOf", []):
        if (match := new_options.get(_shape(old_doc, option))) is not None:
            yield from _compare(old_doc, new_doc, option, match, path)


def _shape(document: _Schema, node: dict) -> str:
    """What a value must be, in words that change only when its type does."""
    node = document.resolve(node)
    if "anyOf" in node:
        return " or ".join(sorted({_shape(document, option) for option in node["anyOf"]}))
    kind = node.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(sorted(kind))
    if "format" in node:
        kind += f" ({node['format']})"
    if kind == "array":
        kind += f" of {_shape(document, node.get('items', {}))}"
    return kind
