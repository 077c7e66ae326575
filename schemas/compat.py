"""JSON Schema compatibility, after Confluent Schema Registry's rules for JSON Schema (pure).

`incompatibilities(reader, writer)` lists why a reader schema would refuse some record valid
under a writer schema: a property the reader's closed content model does not know (removed), a
property the reader requires that the writer may omit (a required field added), a type, enum,
const, union variant or bound the reader accepts less of than the writer (narrowed).

- BACKWARD (the new schema reads what the old one wrote; producers of old records keep
  working): `incompatibilities(reader=new, writer=old)`.
- FORWARD (the old schema reads what the new one writes; consumers written against the old
  schema keep working): `incompatibilities(reader=old, writer=new, tolerant=True)`. Tolerant:
  the client contract (docs/clients.md) asks readers to ignore properties and record types they
  do not know, so an added optional field or an added event type is not a break; a removed
  required field, a widened type or a new enum value is.
- FULL: both.
"""

from __future__ import annotations

import re
from typing import Any, cast

BACKWARD, FORWARD, FULL = "BACKWARD", "FORWARD", "FULL"
_BOUNDS_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_BOUNDS_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")


class _Side:
    """One schema with its own definitions, so that `$ref`s resolve within it."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def resolve(self, node: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        ref = node.get("$ref")
        if not ref:
            return node, None
        target = self.root
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return merged, ref


def _types(node: dict[str, Any]) -> set[str] | None:
    kind = node.get("type")
    if kind is None:
        if "const" in node:
            return {_json_type(node["const"])}
        if "enum" in node:
            return {_json_type(v) for v in node["enum"]}
        if "properties" in node:
            return {"object"}
        return None  # anything
    return {kind} if isinstance(kind, str) else set(kind)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _variants(node: dict[str, Any]) -> list[dict[str, Any]] | None:
    for keyword in ("oneOf", "anyOf"):
        if keyword in node:
            return cast(list[dict[str, Any]], node[keyword])
    return None


def _tag(side: _Side, node: dict[str, Any], discriminator: str | None) -> str | None:
    node, _ = side.resolve(node)
    if discriminator:
        value = node.get("properties", {}).get(discriminator, {})
        value, _ = side.resolve(value)
        if "const" in value:
            return str(value["const"])
        if len(value.get("enum", [])) == 1:
            return str(value["enum"][0])
    return None


def _discriminator(node: dict[str, Any]) -> str | None:
    found = node.get("discriminator")
    return found.get("propertyName") if isinstance(found, dict) else found


class _Checker:
    def __init__(self, reader: dict[str, Any], writer: dict[str, Any], tolerant: bool) -> None:
        self.reader, self.writer, self.tolerant = _Side(reader), _Side(writer), tolerant
        self.seen: set[tuple[str, str]] = set()

    def check(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[str]:
        r, r_ref = self.reader.resolve(r)
        w, w_ref = self.writer.resolve(w)
        if r_ref and w_ref:
            if (r_ref, w_ref) in self.seen:
                return []  # recursion: already being compared
            self.seen.add((r_ref, w_ref))
        if r is True or r == {}:  # type: ignore[comparison-overlap]  # JSON Schema allows `true` for a schema
            return []
        w_variants, r_variants = _variants(w), _variants(r)
        if w_variants is not None:
            return self._writer_union(r, w, w_variants, path)
        if r_variants is not None:
            return self._into_union(r_variants, w, path)
        return self._plain(r, w, path)

    def _writer_union(
        self, r: dict[str, Any], w: dict[str, Any], variants: list[dict[str, Any]], path: str
    ) -> list[str]:
        """Every variant the writer may write must be readable."""
        r_variants = _variants(r)
        key = _discriminator(w) or _discriminator(r) or "type"
        if r_variants is not None:
            by_tag = {t: v for v in r_variants if (t := _tag(self.reader, v, key)) is not None}
            problems = []
            for variant in variants:
                tag = _tag(self.writer, variant, key)
                if tag is not None and by_tag:
                    if tag not in by_tag:
                        if not self.tolerant:
                            problems.append(f"{path}: {key} {tag!r} no longer accepted (variant removed)")
                        continue
                    problems += self.check(by_tag[tag], variant, f"{path}<{tag}>")
                else:
                    problems += self._into_union(r_variants, variant, path)
            return problems
        problems = []
        for variant in variants:
            problems += self.check(r, variant, path)
        return problems

    def _into_union(self, r_variants: list[dict[str, Any]], w: dict[str, Any], path: str) -> list[str]:
        """A writer's (non-union) schema must fit at least one of the reader's variants."""
        best: list[str] | None = None
        for variant in r_variants:
            saved = set(self.seen)
            problems = self.check(variant, w, path)
            self.seen = saved
            if not problems:
                return []
            if best is None or len(problems) < len(best):
                best = problems
        w_types = _types(self.writer.resolve(w)[0])
        return best if best and w_types != {"null"} else [f"{path}: {sorted(w_types or {'any'})} no longer accepted"]

    def _plain(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[str]:
        problems: list[str] = []
        r_types, w_types = _types(r), _types(w)
        if r_types is not None:
            w_effective = w_types or {"any"}
            widened_ok = {"integer"} if "number" in r_types else set()
            lost = {t for t in w_effective if t not in r_types and t not in widened_ok}
            if lost:
                return [f"{path}: type narrowed ({'/'.join(sorted(w_effective))} -> {'/'.join(sorted(r_types))})"]
        if "const" in r and w.get("const", object()) != r["const"] and w.get("enum") != [r["const"]]:
            problems.append(f"{path}: const {r['const']!r} now required (was {w.get('const', w.get('enum', 'any'))!r})")
        if "enum" in r:
            written = w.get("enum") if "enum" in w else ([w["const"]] if "const" in w else None)
            if written is None:
                problems.append(f"{path}: narrowed to the values {r['enum']}")
            elif missing := [v for v in written if v not in r["enum"]]:
                problems.append(f"{path}: enum value{'s' if len(missing) > 1 else ''} {missing} removed")
        for bound in _BOUNDS_LOWER:
            if bound in r and (bound not in w or w[bound] < r[bound]):
                problems.append(f"{path}: {bound} raised to {r[bound]} (was {w.get(bound, 'none')})")
        for bound in _BOUNDS_UPPER:
            if bound in r and (bound not in w or w[bound] > r[bound]):
                problems.append(f"{path}: {bound} lowered to {r[bound]} (was {w.get(bound, 'none')})")
        if "pattern" in r and r["pattern"] != w.get("pattern"):
            problems.append(f"{path}: pattern {r['pattern']!r} now required")
        if (r_types is None or "object" in r_types) and (
            "properties" in r or "properties" in w or "additionalProperties" in r
        ):
            problems += self._object(r, w, path)
        if "items" in r and isinstance(r["items"], dict):
            problems += self.check(
                r["items"], w.get("items", {}) if isinstance(w.get("items"), dict) else {}, f"{path}[]"
            )
        return problems

    def _object(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[str]:
        problems = []
        r_props, w_props = r.get("properties", {}), w.get("properties", {})
        r_required, w_required = set(r.get("required", ())), set(w.get("required", ()))
        for name in sorted(r_required - w_required):
            what = "made required" if name in w_props else "required field added"
            problems.append(f"{path}.{name}: {what}")
        r_closed = r.get("additionalProperties") is False
        r_extra = r.get("additionalProperties")
        for name, w_prop in w_props.items():
            if name in r_props:
                problems += self.check(r_props[name], w_prop, f"{path}.{name}")
            elif r_closed and not self.tolerant:
                problems.append(f"{path}.{name}: field removed")
            elif isinstance(r_extra, dict):
                problems += self.check(r_extra, w_prop, f"{path}.{name}")
        if isinstance(r_extra, dict) and isinstance(w.get("additionalProperties"), dict):
            problems += self.check(r_extra, w["additionalProperties"], f"{path}.*")
        elif r_closed and not self.tolerant and w.get("additionalProperties", True) is not False:
            problems.append(f"{path}: closed to properties the writer allowed (additionalProperties)")
        return problems


def incompatibilities(reader: dict[str, Any], writer: dict[str, Any], tolerant: bool = False) -> list[str]:
    """Why `reader` would refuse records valid under `writer` (empty: compatible)."""
    return _Checker(reader, writer, tolerant).check(reader, writer, "record")


def check(old: dict[str, Any], new: dict[str, Any], mode: str = FULL) -> list[str]:
    """Breaks of a change from `old` to `new` under a compatibility mode."""
    problems = []
    if mode in (BACKWARD, FULL):
        problems += [f"BACKWARD {p}" for p in incompatibilities(reader=new, writer=old)]
    if mode in (FORWARD, FULL):
        problems += [f"FORWARD {_as_forward(p)}" for p in incompatibilities(reader=old, writer=new, tolerant=True)]
    return problems


_FORWARD_WORDS = [
    (re.compile(r"type narrowed \((.*?) -> (.*?)\)"), r"type widened (\2 -> \1)"),
    (re.compile(r"(enum values?) (.*) removed"), r"\1 \2 added"),
    (re.compile(r"required field added"), "required field removed"),
    (re.compile(r"made required"), "made optional"),
]


def _as_forward(problem: str) -> str:
    """The checker speaks of what the reader lost; forward, the reader is the old schema, so
    say what the new one did (widened, added, removed)."""
    for pattern, replacement in _FORWARD_WORDS:
        problem = pattern.sub(replacement, problem)
    return problem


TOPIC_MODES = {"commands": BACKWARD, "health": BACKWARD, "instance-status": BACKWARD}
"""Clients write these and the platform reads them: a new platform must read old clients'
records. Every other topic is FULL: the platform replays its own old records (BACKWARD) and
clients read the new ones (FORWARD)."""


def check_all(baseline: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]]) -> list[str]:
    """Every break between the published schemas and the current ones, per topic."""
    problems = []
    for topic, old in sorted(baseline.items()):
        if topic not in current:
            problems.append(f"{topic}: topic removed")
            continue
        problems += [f"{topic}: {p}" for p in check(old, current[topic], TOPIC_MODES.get(topic, FULL))]
    return problems
