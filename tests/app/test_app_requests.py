"""The request schema generated from a feature schema: types, categories, every kind of bad body."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.predict.parser import MAX_ERRORS, RequestError, RequestParser
from tand.schema import Feature, FeatureSchema

SCHEMA = FeatureSchema(
    features=(
        Feature("size", "numeric", "number"),
        Feature("count", "numeric", "integer"),
        Feature("colour", "categorical", "string", ("blue", "red")),
        Feature("rooms", "categorical", "integer", (1, 2, 3)),
        Feature("ratio", "categorical", "number", (0.5, 1.5)),
        Feature("garden", "categorical", "boolean", (False, True)),
    ),
    task="classification",
    label="kind",
    classes=("no", "yes"),
)
ROW = {"size": 2.5, "count": 3, "colour": "red", "rooms": 2, "ratio": 1.5, "garden": True}
parser = RequestParser(SCHEMA, max_rows=3)


def errors_of(body) -> list[dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(RequestError) as caught:
        parser.parse(raw)
    return caught.value.errors


VALUES = tuple(ROW.values())  # a validated row: the values in feature order


def test_valid_object_and_array():
    assert parser.parse(json.dumps(ROW).encode()) == ([VALUES], False)
    assert parser.parse(json.dumps([ROW, ROW]).encode()) == ([VALUES, VALUES], True)
    assert parser.parse(b"\n  " + json.dumps([ROW]).encode()) == ([VALUES], True)
    # A whole number is a valid `number`, and becomes one.
    (row,), _ = parser.parse(json.dumps({**ROW, "size": 2}).encode())
    assert row[0] == 2 and type(row[0]) is float


@pytest.mark.parametrize(
    "change, loc, message",
    [
        ({"size": "2.5"}, "size", "valid number"),
        ({"size": None}, "size", "valid number"),
        ({"size": True}, "size", "valid number"),
        ({"count": 2.5}, "count", "valid integer"),
        ({"count": 10**400}, "count", "less than or equal to"),
        ({"size": -1e16}, "size", "greater than or equal to"),
        ({"colour": "green"}, "colour", "'blue' or 'red'"),
        ({"colour": 1}, "colour", "'blue' or 'red'"),
        ({"rooms": 4}, "rooms", "1 or 2 or 3"),
        ({"rooms": True}, "rooms", "valid integer"),
        ({"rooms": 2.5}, "rooms", "valid integer"),
        ({"count": "3"}, "count", "valid integer"),
        ({"ratio": 1.0}, "ratio", "0.5 or 1.5"),
        ({"garden": 1}, "garden", "valid boolean"),
        ({"extra": 1}, "extra", "Extra inputs are not permitted"),
    ],
)
def test_each_bad_field_is_named(change, loc, message):
    (error,) = errors_of({**ROW, **change})
    assert error["loc"] == ["body", loc] and message in error["msg"]


def test_missing_fields_are_each_named():
    errors = errors_of({k: v for k, v in ROW.items() if k not in ("size", "rooms")})
    assert {tuple(e["loc"]) for e in errors} == {("body", "size"), ("body", "rooms")}
    assert all(e["msg"] == "Field required" for e in errors)


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_refused(token):
    body = json.dumps(ROW).replace("2.5", "__X__").encode().replace(b'"__X__"', token).replace(b"__X__", token)
    (error,) = errors_of(body)
    assert error["loc"][0] == "body" and error["type"] in ("finite_number", "json_invalid")


def test_malformed_json_empty_and_oversized_arrays_and_the_wrong_shape():
    assert errors_of(b'{"size": 2.5,')[0]["type"] == "json_invalid"
    assert errors_of(b"")[0]["type"] == "json_invalid"
    assert errors_of([])[0]["msg"] == "List should have at least 1 item after validation, not 0"
    too_many = errors_of([ROW] * 4)[0]
    assert too_many["type"] == "too_long" and "at most 3 items" in too_many["msg"]
    assert errors_of(b'"a string"')[0]["type"] == "dict_type"
    assert errors_of([ROW, {**ROW, "size": "x"}])[0]["loc"] == ["body", 1, "size"]


def test_a_flood_of_errors_is_capped():
    many = RequestParser(SCHEMA, max_rows=1000)
    with pytest.raises(RequestError) as caught:
        many.parse(json.dumps([{**ROW, "size": "x"}] * 200).encode())
    errors = caught.value.errors
    assert len(errors) == MAX_ERRORS + 1 and errors[-1]["msg"] == "and 150 more errors"


def test_the_json_schema_types_every_field_and_lists_categories():
    schema = parser.row_json_schema()
    properties = schema["properties"]
    assert schema["additionalProperties"] is False and sorted(schema["required"]) == sorted(ROW)
    assert properties["size"]["type"] == "number" and properties["count"]["type"] == "integer"
    assert properties["colour"]["enum"] == ["blue", "red"] and properties["colour"]["type"] == "string"
    assert (properties["rooms"]["type"], properties["rooms"]["enum"]) == ("integer", [1, 2, 3])
    assert (properties["ratio"]["type"], properties["ratio"]["enum"]) == ("number", [0.5, 1.5])
    assert properties["garden"]["type"] == "boolean"
    body = parser.body_json_schema("#/components/schemas/Features")
    assert body["anyOf"][1]["maxItems"] == 3 and body["anyOf"][1]["minItems"] == 1


# -- the fast validator (msgspec) against pydantic's, on the same bodies --------------------------------

FAST = FeatureSchema(
    features=(
        Feature("size", "numeric", "number"),
        Feature("count", "numeric", "integer"),
        Feature("colour name", "categorical", "string", ("blue", "red")),  # not an identifier
        Feature("rooms", "categorical", "integer", (1, 2, 3)),
        Feature("garden", "categorical", "boolean", (False, True)),
    ),
    task="classification",
    label="kind",
)
FAST_ROW = {"size": 2.5, "count": 3, "colour name": "red", "rooms": 2, "garden": True}
fast_parser = RequestParser(FAST, max_rows=4)


def test_the_fast_validator_serves_schemas_it_can_say_and_leaves_the_rest_to_pydantic():
    assert fast_parser._fast is not None
    assert parser._fast is None, "float categories are not msgspec's to check"
    assert fast_parser.parse(json.dumps([FAST_ROW]).encode()) == ([tuple(FAST_ROW.values())], True)
    # Integer categories beyond 64 bits (an id column declared categorical): pydantic alone, still served.
    ids = FeatureSchema((Feature("id", "categorical", "integer", (0, 10**19)),), "classification", "kind")
    wide = RequestParser(ids, max_rows=2)
    assert wide._fast is None and wide.parse(b'{"id": 10000000000000000000}') == ([(10**19,)], False)


def _outcome(parse, body: bytes):
    try:
        rows, batch = parse(body)
    except RequestError as exc:
        return "refused", exc.errors
    return "accepted", [[(type(v), v) for v in row] for row in rows], batch


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**17), 10**17), st.integers(min_value=10**20), st.floats(allow_nan=False),
    st.sampled_from([0, 1, 2, 3, 4, 1.0, 2.0, -0.0, 1e15, -1e15, 1e15 + 1, 10**15, 10**15 + 1, 1e-300]),
    st.sampled_from(["blue", "red", "Red", "", "2", "true"]), st.lists(st.integers(), max_size=2), st.just({}),
)


_VALID = {  # valid values of each field, so that most rows stay valid and the fast path is exercised
    "size": st.one_of(st.floats(-1e15, 1e15), st.integers(-(10**15), 10**15)),
    "count": st.integers(-(10**15), 10**15),
    "colour name": st.sampled_from(["blue", "red"]),
    "rooms": st.sampled_from([1, 2, 3]),
    "garden": st.booleans(),
}


@st.composite
def _row(draw):
    row = {name: draw(values) for name, values in _VALID.items()}
    if draw(st.integers(0, 3)) == 0:  # a quarter of the rows get something wrong
        for name in draw(st.lists(st.sampled_from(list(FAST_ROW)), min_size=1, max_size=2)):
            row[name] = draw(_VALUES)
        if draw(st.booleans()):
            row.pop(draw(st.sampled_from(list(FAST_ROW))), None)
        if draw(st.booleans()):
            row[draw(st.sampled_from(["extra", "SIZE", "size "]))] = 1
    return row


@st.composite
def _body(draw) -> bytes:
    kind = draw(st.sampled_from(["row", "rows", "raw", "dup"]))
    if kind == "row":
        return json.dumps(draw(_row())).encode()
    if kind == "rows":
        return json.dumps(draw(st.lists(_row(), max_size=6))).encode()
    if kind == "dup":  # a repeated key: both validators keep the last one
        return b'{"size": "x", ' + json.dumps(draw(_row()))[1:].encode()
    text = json.dumps(FAST_ROW)
    token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1E2", "0.1e1", "01", "1.", "true", " "]))
    return draw(st.sampled_from([text.replace("2.5", token), text.replace("3", token, 1), text + token, token + text, "\ufeff" + text])).encode()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_body())
def test_the_fast_validator_accepts_nothing_pydantic_refuses_and_reads_the_same_values(body):
    assert _outcome(fast_parser.parse, body) == _outcome(fast_parser.parse_with_pydantic, body)


def test_an_integral_float_is_accepted_for_an_integer_and_read_as_the_integer():
    """pandas writes an integer column with gaps as floats: `to_dict` rows say 3.0."""
    rows, _ = parser.parse(json.dumps({**ROW, "count": 3.0, "rooms": 2.0}).encode())
    values = dict(zip(SCHEMA.names, rows[0]))
    assert (values["count"], type(values["count"]), values["rooms"], type(values["rooms"])) == (3, int, 2, int)


# -- features the pipeline imputes: null and omitted are missing values -----------------------------

NULLABLE = FeatureSchema(tuple(replace(f, nullable=True) for f in FAST.features), task="classification", label="kind")
nullable_parser = RequestParser(NULLABLE, max_rows=4)


def test_null_and_omitted_imputed_features_are_missing_values_on_both_paths():
    assert nullable_parser._fast is not None
    body = {**FAST_ROW, "size": None, "colour name": None}
    del body["rooms"]
    expected = [(None, 3, None, None, True)]
    assert nullable_parser.parse(json.dumps(body).encode()) == (expected, False)
    assert nullable_parser.parse_with_pydantic(json.dumps(body).encode()) == (expected, False)
    assert nullable_parser.parse(b"{}") == ([(None,) * 5], False)
    # Still refused: NaN, an unknown category, an unknown field; and null where the schema says nothing of it.
    for bad in (b'{"size": NaN}', b'{"colour name": "green"}', b'{"extra": 1}'):
        with pytest.raises(RequestError):
            nullable_parser.parse(bad)
    with pytest.raises(RequestError):
        fast_parser.parse(json.dumps({**FAST_ROW, "size": None}).encode())


def test_the_request_schema_documents_nullable_features_as_optional():
    schema = nullable_parser.row_json_schema()
    assert schema.get("required", []) == []
    assert {"type": "null"} in schema["properties"]["size"]["anyOf"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_body())
def test_with_nullable_features_the_fast_validator_is_still_never_laxer(body):
    assert _outcome(nullable_parser.parse, body) == _outcome(nullable_parser.parse_with_pydantic, body)
