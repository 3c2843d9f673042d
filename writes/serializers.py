"""Input validation for the write API. Strict: a field of the wrong type is an error, not coerced.

Lengths come from the Documents' field rules (writes/aggregates.py), as do the admin's forms.
"""

from django.core.validators import RegexValidator
from rest_framework import serializers

from .aggregates import POST_AGGREGATE, USER_AGGREGATE

# Each rule is a validator (not only a check in code) so the OpenAPI schema states it as a
# `pattern`, and what the schema allows is exactly what the API accepts (tests/e2e schemathesis).
username_validator = RegexValidator(r"^[A-Za-z0-9_.-]+\Z", "Use only letters, digits, '_', '.' and '-'.")
object_id_validator = RegexValidator(r"^[0-9a-fA-F]{24}\Z", "Send an id this API gave out: 24 hexadecimal digits.")
# No NUL characters (DRF refuses them anyway), and a title needs something besides whitespace.
text_validator = RegexValidator(r"^[^\x00]*\Z", "NUL characters are not allowed.")
title_validator = RegexValidator(
    r"^[^\x00]*[^\s\x00][^\x00]*\Z", "A title needs a visible character and no NUL characters."
)


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers, booleans, lists and objects instead of stringifying them,
    so `{"$gt": ""}` can never reach a query as anything but an error."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSerializer(serializers.Serializer):
    """Refuses unknown fields: a misspelt field is an error, not silently ignored."""

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
        return attrs


class UserCreateInput(StrictSerializer):
    username = StrictCharField(
        **USER_AGGREGATE.rules("username"), trim_whitespace=False, validators=[username_validator]
    )


# Titles are stored as sent (not trimmed): trimming would let a body the schema refuses (a title
# over 200 characters with spaces around it) through.
class PostCreateInput(StrictSerializer):
    user_id = StrictCharField(max_length=24, validators=[object_id_validator])
    title = StrictCharField(**POST_AGGREGATE.rules("title"), trim_whitespace=False, validators=[title_validator])
    content = StrictCharField(**POST_AGGREGATE.rules("content"), trim_whitespace=False, validators=[text_validator])


class PostUpdateInput(StrictSerializer):
    title = StrictCharField(
        **POST_AGGREGATE.rules("title"), trim_whitespace=False, required=False, validators=[title_validator]
    )
    content = StrictCharField(
        **POST_AGGREGATE.rules("content"), trim_whitespace=False, required=False, validators=[text_validator]
    )
