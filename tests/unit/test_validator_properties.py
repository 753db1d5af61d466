"""Property tests of the public validators: phones and request schemas never fail unexpectedly."""

from __future__ import annotations

import string

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from app.schemas import BatchSchema, MessageListQuerySchema, SendSchema
from waorch.core.phones import InvalidPhone, normalize

phone_like = st.one_of(
    st.text(alphabet=string.digits + "+-() .", max_size=40),
    st.text(max_size=40),
    st.from_regex(r"\+?[1-9][0-9]{6,14}", fullmatch=True),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children,
                                                                       max_size=4),
    max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(phone_like)
def test_normalize_gives_valid_e164_digits_or_invalid_phone(text):
    try:
        digits = normalize(text)
    except InvalidPhone as exc:
        assert str(exc)
        return
    assert digits.isdigit() and len(digits) <= 15
    assert phonenumbers.is_valid_number(phonenumbers.parse("+" + digits))
    assert normalize(digits) == digits  # stable: what we store normalizes to itself


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_normalize_of_any_json_value_is_invalid_phone_or_digits(value):
    try:
        digits = normalize(value)
    except InvalidPhone as exc:
        assert str(exc)
        return
    assert isinstance(value, str) and digits.isdigit()


send_like = st.fixed_dictionaries(
    {}, optional={"to": json_values | phone_like, "text": json_values, "from": json_values | phone_like,
                  "media": json_values | st.fixed_dictionaries({"url": st.text(max_size=30)}),
                  "client_ref": json_values, "expires_at": json_values | st.datetimes().map(str)})


@settings(max_examples=400, deadline=None)
@given(st.one_of(send_like, json_values))
def test_send_schema_loads_or_raises_validation_error(payload):
    try:
        loaded = SendSchema().load(payload)
    except ValidationError as exc:
        assert exc.normalized_messages()
        return
    assert loaded["to"].isdigit()
    assert loaded.get("text", "").strip() or loaded.get("media")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.fixed_dictionaries({"messages": st.lists(send_like, max_size=3)}), json_values))
def test_batch_schema_loads_or_raises_validation_error(payload):
    try:
        loaded = BatchSchema().load(payload)
    except ValidationError as exc:
        assert exc.normalized_messages()
        return
    assert isinstance(loaded["messages"], list) and loaded["messages"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["status", "session", "cursor", "limit", "x"]),
                       st.text(max_size=30), max_size=5))
def test_message_query_schema_loads_or_raises_validation_error(query):
    try:
        loaded = MessageListQuerySchema().load(query)
    except ValidationError:
        return
    assert 1 <= loaded["limit"] <= 200
