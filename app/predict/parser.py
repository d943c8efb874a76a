"""Request and response schemas, generated from the served model's feature schema.

A /predict body is one JSON object of features or a JSON array of them. Each field is typed
from the model (number, integer, boolean, or one of the known categories); a feature the pipeline
imputes (Feature.nullable: all of the template's) may be null or left out, and then reaches the model
as missing, exactly as a missing value in the training CSV; an integer may be written 3.0 (pandas
writes integer columns with gaps as floats); extra fields, NaN and Infinity are refused. Validated
rows are tuples of values in the schema's order, None where a value is missing.

Two validators of the same rules: pydantic-core, which writes the OpenAPI schema and names every
bad field in a 422, and msgspec, which decodes a valid body 4-5 times faster (1,000 rows of 30
numbers: 1.6 ms against 7.1 ms here) into structs whose fields are the row's values in order. A
body goes to msgspec first; anything it refuses goes to pydantic, which then decides: msgspec may
be stricter, never laxer (tests/app/test_app_requests.py fuzzes the two against each other).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

import msgspec
from pydantic import AfterValidator, ConfigDict, Field, PlainValidator, Strict, TypeAdapter, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError
from typing_extensions import NotRequired, TypedDict

from tand.schema import Feature, FeatureSchema

MAX_ERRORS = 50  # a 10,000-row batch of bad rows should not answer with a 10,000-entry list
# Valid JSON numbers such as 1e308 overflow once standardised (the MLP computes in float32), and
# integers beyond 2**1024 cannot become floats at all: numbers are bounded, and the schema says so.
MAX_MAGNITUDE = 10**15
ROW_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
_JSON_TYPES = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean"}


class RequestError(Exception):
    """The body is not a valid /predict request; `errors` says where and why (FastAPI's 422 shape)."""

    def __init__(self, errors: list[dict]):
        super().__init__(errors)
        self.errors = errors


def _one_of(values: tuple):
    allowed = frozenset(values)
    expected = " or ".join(repr(v) for v in values) if len(values) <= 20 else f"one of the {len(values)} known values"

    def check(value):
        if value not in allowed:
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
        return value

    return AfterValidator(check)


def _whole_number(value):
    """An integer, or a float with no fractional part as that integer (pandas writes integer columns
    with missing values as floats: 0.0); never a bool or a string."""
    if type(value) is int:
        number = value
    elif type(value) is float and value.is_integer():
        number = int(value)
    else:
        fraction = ", got a number with a fractional part" if type(value) is float else ""
        raise PydanticCustomError("int_type", "Input should be a valid integer" + fraction)
    if number > MAX_MAGNITUDE:
        raise PydanticCustomError("less_than_equal", "Input should be less than or equal to {le}", {"le": MAX_MAGNITUDE})
    if number < -MAX_MAGNITUDE:
        raise PydanticCustomError("greater_than_equal", "Input should be greater than or equal to {ge}", {"ge": -MAX_MAGNITUDE})
    return number


WHOLE_NUMBER = PlainValidator(_whole_number, json_schema_input_type=int)


@dataclass(frozen=True)
class Rule:
    """What one feature's value must be: the single statement of the rules that the JSON validators below
    (pydantic, msgspec) and the column-wise one for files (app/predict/columns.py) are built from.

    value: "number" (a JSON int or float, never a bool), "integer" (a whole number: 3 or 3.0), "boolean",
    "text". allowed: the known categories a value must be one of; None: any value of its type. bounded:
    within ±MAX_MAGNITUDE (numbers; categories only have to be known). nullable: null or left out is missing.
    """

    value: Literal["number", "integer", "boolean", "text"]
    allowed: tuple | None
    bounded: bool
    nullable: bool


def rule_of(feature: Feature) -> Rule:
    if feature.kind == "numeric":
        return Rule("integer" if feature.dtype == "integer" else "number", None, True, feature.nullable)
    if feature.dtype == "boolean":
        return Rule("boolean", None, False, feature.nullable)
    categories = tuple(feature.categories or ())
    if feature.dtype == "string":
        return Rule("text", categories or None, False, feature.nullable)
    return Rule("integer" if feature.dtype == "integer" else "number", categories, False, feature.nullable)


def _field_type(feature: Feature):
    kind = _value_type(rule_of(feature))
    return NotRequired[Optional[kind]] if feature.nullable else kind


def _value_type(rule: Rule):
    if rule.bounded:
        bounds = {"minimum": -MAX_MAGNITUDE, "maximum": MAX_MAGNITUDE}
        if rule.value == "integer":
            return Annotated[int, WHOLE_NUMBER, WithJsonSchema({"type": "integer", **bounds})]
        return Annotated[float, Strict(), Field(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)]
    if rule.value == "boolean":
        return Annotated[bool, Strict()]
    if rule.value == "text":
        return Literal[rule.allowed] if rule.allowed else str
    categories = rule.allowed
    enum = {"type": _JSON_TYPES[rule.value], "enum": list(categories)}
    # Literal would accept true for 1: a strict type first (a whole number for integers), then membership.
    if rule.value == "integer":
        return Annotated[int, PlainValidator(_whole_category, json_schema_input_type=int), _one_of(categories), WithJsonSchema(enum)]
    return Annotated[float, Strict(), _one_of(categories), WithJsonSchema(enum)]


def _whole_category(value):
    # Categories are not bounded like numbers (they only have to be known), so no ±MAX_MAGNITUDE here.
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    raise PydanticCustomError("int_type", "Input should be a valid integer")


def features_type(schema: FeatureSchema) -> type:
    row = TypedDict("Features", {f.name: _field_type(f) for f in schema.features})
    row.__pydantic_config__ = ROW_CONFIG
    return row


def _fast_field_type(feature: Feature):
    """The msgspec type accepting what _field_type accepts (or less: msgspec refuses 1.0 for an integer,
    pydantic then accepts it), or None where msgspec cannot say it (float categories: msgspec's Literal
    takes no floats; free text: left to pydantic's own checks)."""
    kind = _fast_value_type(feature)
    return Optional[kind] if kind is not None and feature.nullable else kind


def _fast_value_type(feature: Feature):
    rule = rule_of(feature)
    if rule.bounded:
        if rule.value == "integer":
            return Annotated[int, msgspec.Meta(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)]
        return Annotated[float, msgspec.Meta(ge=-float(MAX_MAGNITUDE), le=float(MAX_MAGNITUDE))]
    if rule.value == "boolean":
        return bool
    if rule.allowed and rule.value in ("text", "integer"):
        return Literal[rule.allowed]
    return None


def fast_decoder(schema: FeatureSchema) -> msgspec.json.Decoder | None:
    """A decoder of one row or a list of rows into structs with one field per feature, in order."""
    types = [_fast_field_type(f) for f in schema.features]
    if not types or any(t is None for t in types):
        return None
    # Feature names need not be identifiers; a nullable feature may be left out (None).
    fields = [(f"f{i}", t, None) if f.nullable else (f"f{i}", t) for i, (f, t) in enumerate(zip(schema.features, types))]
    rename = {f"f{i}": f.name for i, f in enumerate(schema.features)}
    try:
        row = msgspec.defstruct("Row", fields, rename=rename, forbid_unknown_fields=True, kw_only=True)
        return msgspec.json.Decoder(Union[row, list[row]])
    except (TypeError, ValueError, NotImplementedError):  # e.g. integer categories beyond 64 bits
        return None


class RequestParser:
    """Body bytes → validated rows (tuples in feature order), or RequestError naming each bad field."""

    def __init__(self, schema: FeatureSchema, max_rows: int):
        self.row_type = features_type(schema)
        self.max_rows = max_rows
        self._one = TypeAdapter(self.row_type)
        self._many = TypeAdapter(Annotated[list[self.row_type], Field(min_length=1, max_length=max_rows)])
        self._schema = schema
        self._fast = fast_decoder(schema)

    def parse(self, body: bytes) -> tuple[list[tuple], bool]:
        """(rows, is_batch)."""
        if self._fast is not None:
            try:
                value = self._fast.decode(body)
            except msgspec.MsgspecError:
                pass  # pydantic decides, and names what is wrong
            else:
                if type(value) is not list:
                    return [msgspec.structs.astuple(value)], False
                if 1 <= len(value) <= self.max_rows:
                    return list(map(msgspec.structs.astuple, value)), True
        return self.parse_with_pydantic(body)

    def parse_with_pydantic(self, body: bytes) -> tuple[list[tuple], bool]:
        head = body[:1]
        if head in (b" ", b"\t", b"\r", b"\n"):
            head = body.lstrip()[:1]
        batch = head == b"["
        try:
            value = (self._many if batch else self._one).validate_json(body)
        except ValidationError as exc:
            raise RequestError(_errors(exc)) from None
        return (self._schema.rows(value), True) if batch else (self._schema.rows([value]), False)

    def row_json_schema(self) -> dict:
        schema = self._one.json_schema(ref_template="#/components/schemas/{model}")
        schema.pop("$defs", None)
        return schema

    def body_json_schema(self, ref: str) -> dict:
        return {
            "anyOf": [
                {"$ref": ref},
                {"type": "array", "items": {"$ref": ref}, "minItems": 1, "maxItems": self.max_rows},
            ],
            "description": f"One object of features, or an array of 1 to {self.max_rows} of them.",
        }


def _errors(exc: ValidationError) -> list[dict]:
    found = exc.errors(include_url=False, include_input=False, include_context=False)
    errors = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in found[:MAX_ERRORS]]
    if len(found) > MAX_ERRORS:
        errors.append({"loc": ["body"], "msg": f"and {len(found) - MAX_ERRORS} more errors", "type": "too_many_errors"})
    return errors


def example_from_schema(schema: FeatureSchema) -> dict[str, Any]:
    """A valid row when the registry holds no request example."""
    example = {}
    for f in schema.features:
        if f.categories:
            example[f.name] = f.categories[0]
        else:
            example[f.name] = {"integer": 0, "boolean": False, "string": ""}.get(f.dtype, 0.0)
    return example


def response_json_schemas(schema: FeatureSchema, proba: bool, class_names) -> dict[str, dict]:
    """OpenAPI component schemas for /predict answers (hand-built: they depend on the task)."""
    if schema.task == "classification":
        prediction = {"type": "string", "enum": list(class_names or ())}
        item = {"type": "object", "properties": {"prediction": prediction}, "required": ["prediction"]}
        if proba:
            probabilities = {name: {"type": "number", "minimum": 0, "maximum": 1} for name in class_names}
            item["properties"]["probabilities"] = {"type": "object", "properties": probabilities}
            item["required"].append("probabilities")
    else:
        item = {"type": "object", "properties": {"prediction": {"type": "number"}}, "required": ["prediction"]}
    version = {"type": "integer", "description": "The registered model version that answered."}
    single = {
        "type": "object",
        "properties": {**item["properties"], "model_version": version},
        "required": [*item["required"], "model_version"],
    }
    batch = {
        "type": "object",
        "properties": {"predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}}, "model_version": version},
        "required": ["predictions", "model_version"],
    }
    return {
        "Prediction": item,
        "PredictionResponse": single,
        "BatchPredictionResponse": batch,
    }
