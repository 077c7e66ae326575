"""The client contract's schemas: the AsyncAPI document validates against the official AsyncAPI
3.0 JSON Schema, the models stay compatible with the published baseline (docs/schemas/), and
the checker catches each kind of breaking change while accepting additive optional fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, create_model

from schemas.asyncapi import asyncapi_document
from schemas.compat import BACKWARD, FORWARD, FULL, check, check_all
from schemas.records import TOPIC_RECORDS, read_json_schemas, topic_schemas

ROOT = Path(__file__).resolve().parents[1]
ASYNCAPI_SCHEMA = json.loads((Path(__file__).parent / "asyncapi" / "asyncapi-3.0.0.schema.json").read_text())


def test_asyncapi_document_validates_against_the_official_schema():
    document = asyncapi_document("stratos.", 4)
    validator = jsonschema.Draft7Validator(ASYNCAPI_SCHEMA)
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(document)]
    assert errors == []
    assert {c["address"] for c in document["channels"].values()} == {f"stratos.{t}" for t in TOPIC_RECORDS}
    commands = document["components"]["messages"]["CommandRecord"]
    assert "aggregate id" in commands["bindings"]["kafka"]["key"]["description"]
    assert {"ce_id", "ce_subject", "ce_causationid"} <= set(commands["headers"]["properties"])
    assert "__connect.errors.offset" in document["components"]["messages"]["DeadLetterRecord"]["headers"]["properties"]
    # every $ref resolves inside the document
    text = json.dumps(document)
    for ref in set(part.split('"')[0] for part in text.split('"$ref": "#/')[1:]):
        node = document
        for key in ref.split("/"):
            node = node[key]


def test_the_official_schema_refuses_a_broken_document():
    document = asyncapi_document()
    document["channels"]["commands"]["messages"]["Broken"] = {"payload": 3}
    del document["info"]["version"]
    assert len(list(jsonschema.Draft7Validator(ASYNCAPI_SCHEMA).iter_errors(document))) >= 2


def test_models_are_compatible_with_the_published_baseline():
    """Fails when a model change would break producers or consumers of the published schemas;
    an intended break is published with `stratos schemas baseline` (and announced)."""
    published = read_json_schemas(ROOT / "docs" / "schemas")
    assert set(published) == set(TOPIC_RECORDS)
    assert check_all(published, topic_schemas()) == []


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class A(_Model):
    type: Literal["A"] = "A"
    size: int


class B(_Model):
    type: Literal["B"] = "B"


class C(_Model):
    type: Literal["C"] = "C"


class NarrowA(_Model):
    type: Literal["A"] = "A"
    size: str


DROP = object()
OLD = {
    "id": (str, ...),
    "value": (float, ...),
    "mode": (Literal["fast", "slow"], ...),
    "note": (str | None, None),
    "name": (Annotated[str, Field(max_length=50)], ...),
    "payload": (Annotated[A | B, Field(discriminator="type")], ...),
}


def model(**changes):
    """The Old record with some fields changed (DROP: removed)."""
    fields = {k: v for k, v in {**OLD, **changes}.items() if v is not DROP}
    return create_model("Record", __config__=ConfigDict(extra="forbid"), **fields)


Old = model()
FieldRemoved = model(note=DROP)
TypeNarrowed = model(value=(int, ...))
RequiredAdded = model(owner=(str, ...))
EnumValueRemoved = model(mode=(Literal["fast", "medium"], ...))
BoundTightened = model(name=(Annotated[str, Field(max_length=10)], ...))
VariantRemoved = model(payload=(A, ...))
NestedChange = model(payload=(Annotated[NarrowA | B, Field(discriminator="type")], ...))
Widened = model(value=(float | None, ...))
OptionalAdded = model(comment=(str | None, None), tags=(list[str], []))
VariantAdded = model(payload=(Annotated[A | B | C, Field(discriminator="type")], ...))
IdRemoved = model(id=DROP)


def schema(model) -> dict:
    return model.model_json_schema(mode="validation")


@pytest.mark.parametrize(
    "new, mode, expected",
    [
        (FieldRemoved, BACKWARD, "record.note: field removed"),
        (TypeNarrowed, BACKWARD, "record.value: type narrowed (number -> integer)"),
        (RequiredAdded, BACKWARD, "record.owner: required field added"),
        (EnumValueRemoved, BACKWARD, "record.mode: enum value ['slow'] removed"),
        (BoundTightened, BACKWARD, "record.name: maxLength lowered to 10 (was 50)"),
        (VariantRemoved, BACKWARD, "record.payload"),
        (NestedChange, BACKWARD, "record.payload<A>.size: type narrowed (integer -> string)"),
        (Widened, FORWARD, "record.value: type widened"),
        (EnumValueRemoved, FORWARD, "record.mode: enum value ['medium'] added"),
    ],
    ids=[
        "field-removed",
        "type-narrowed",
        "required-added",
        "enum-value-removed",
        "bound-tightened",
        "variant-removed",
        "nested-type-narrowed",
        "type-widened-breaks-old-readers",
        "new-enum-value-breaks-old-readers",
    ],
)
def test_checker_catches_each_breaking_change(new, mode, expected):
    problems = check(schema(Old), schema(new), mode)
    assert any(expected in p for p in problems), problems
    assert all(p.startswith(mode) for p in problems)


@pytest.mark.parametrize(
    "new", [Old, OptionalAdded, VariantAdded], ids=["unchanged", "optional-fields-added", "record-type-added"]
)
def test_checker_accepts_compatible_changes(new):
    assert check(schema(Old), schema(new), FULL) == []


def test_removing_a_required_field_breaks_old_readers_an_optional_one_does_not():
    assert check(schema(Old), schema(FieldRemoved), FORWARD) == []  # `note` was optional
    assert "FORWARD record.id: required field removed" in check(schema(Old), schema(IdRemoved), FORWARD)


TYPES = st.sampled_from(["string", "integer", "number", "boolean"])
NAMES = st.text("abcdefgh", min_size=1, max_size=6)


@st.composite
def object_schemas(draw):
    props = draw(st.dictionaries(NAMES, TYPES, min_size=1, max_size=6))
    required = sorted(draw(st.sets(st.sampled_from(sorted(props)))))
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": {name: {"type": kind} for name, kind in props.items()},
    }


@given(object_schemas())
def test_a_schema_is_fully_compatible_with_itself(old):
    assert check(old, old, FULL) == []


@given(object_schemas(), NAMES, TYPES)
def test_an_added_optional_property_is_fully_compatible(old, name, kind):
    if name in old["properties"]:
        return
    new = {**old, "properties": {**old["properties"], name: {"type": kind}}}
    assert check(old, new, FULL) == []


@given(object_schemas(), st.data())
def test_removing_any_property_of_a_closed_schema_breaks_backward(old, data):
    name = data.draw(st.sampled_from(sorted(old["properties"])))
    new = {
        **old,
        "properties": {k: v for k, v in old["properties"].items() if k != name},
        "required": [r for r in old["required"] if r != name],
    }
    assert f"BACKWARD record.{name}: field removed" in check(old, new, BACKWARD)
