"""Marshmallow schemas of the public API."""

from __future__ import annotations

from datetime import datetime

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from waorch.core import zset_pages
from waorch.core.phones import InvalidPhone, normalize

MAX_TEXT = 4096


class PhoneField(fields.String):
    """A phone number in international format, loaded as E.164 digits."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return normalize(text)
        except InvalidPhone as exc:
            raise ValidationError(str(exc)) from None


class TimestampField(fields.Field):
    """Unix seconds or an ISO 8601 date-time with offset; loaded as unix seconds."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("give unix seconds or an ISO 8601 date-time")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValidationError("not an ISO 8601 date-time") from None
            if parsed.tzinfo is None:
                raise ValidationError("the date-time needs a UTC offset")
            return parsed.timestamp()
        raise ValidationError("give unix seconds or an ISO 8601 date-time")


class MediaSchema(Schema):
    class Meta:
        unknown = RAISE

    url = fields.Url(required=True, schemes={"http", "https"}, validate=validate.Length(max=2048))
    mimetype = fields.String(validate=validate.Length(max=128))
    caption = fields.String(validate=validate.Length(max=1024))
    filename = fields.String(validate=validate.Length(max=255))


class SendSchema(Schema):
    class Meta:
        unknown = RAISE

    to = PhoneField(required=True)
    text = fields.String(validate=validate.Length(max=MAX_TEXT), load_default="")
    sender = PhoneField(data_key="from", load_default=None)
    media = fields.Nested(MediaSchema, load_default=None)
    client_ref = fields.String(validate=validate.Length(max=128), load_default=None)
    expires_at = TimestampField(load_default=None)

    @validates_schema
    def _has_content(self, data, **kwargs):
        if not data.get("text", "").strip() and not data.get("media"):
            raise ValidationError("give a non-empty text or a media", field_name="text")


class BatchSchema(Schema):
    class Meta:
        unknown = RAISE

    # items are validated one by one in the view, so that bad ones are reported by index
    messages = fields.List(fields.Raw(), required=True, validate=validate.Length(min=1))


class AcceptedSchema(Schema):
    id = fields.String()
    status = fields.String()


class RejectedSchema(Schema):
    index = fields.Integer()
    errors = fields.Dict()


class BatchAcceptedSchema(Schema):
    ids = fields.List(fields.String())
    rejected = fields.List(fields.Nested(RejectedSchema))


class HistoryEntrySchema(Schema):
    status = fields.String()
    at = fields.Float()
    detail = fields.String()


class MessageSchema(Schema):
    id = fields.String()
    status = fields.String()
    reason = fields.String(allow_none=True)
    to = fields.String()
    sender = fields.String(data_key="from", attribute="from", allow_none=True)
    session = fields.String(allow_none=True)
    text = fields.String()
    media = fields.Dict(allow_none=True)
    client_ref = fields.String(allow_none=True)
    wa_id = fields.String(allow_none=True)
    attempts = fields.Integer()
    created_at = fields.Float(allow_none=True)
    updated_at = fields.Float(allow_none=True)
    scheduled_for = fields.Float(allow_none=True)
    expires_at = fields.Float(allow_none=True)
    history = fields.List(fields.Nested(HistoryEntrySchema))


class MessageListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    status = fields.String(validate=validate.OneOf(
        ["queued", "routed", "scheduled", "claimed", "sent", "delivered", "read", "failed"]))
    session = fields.String(validate=validate.Length(max=64))
    to = PhoneField(metadata={"description": "only messages to this number (any format phonenumbers reads)"})
    cursor = fields.String(validate=validate.Regexp(zset_pages.CURSOR_PATTERN))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class MessagePageSchema(Schema):
    items = fields.List(fields.Nested(MessageSchema))
    next_cursor = fields.String(allow_none=True)

