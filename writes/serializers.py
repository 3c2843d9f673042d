"""Input validation for the write API. Strict: a field of the wrong type is an error, not coerced."""

from django.core.validators import RegexValidator
from rest_framework import serializers

username_validator = RegexValidator(r"^[A-Za-z0-9_.-]+\Z", "Use only letters, digits, '_', '.' and '-'.")


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
    username = StrictCharField(max_length=50, trim_whitespace=False, validators=[username_validator])


class PostCreateInput(StrictSerializer):
    user_id = StrictCharField(max_length=64)
    title = StrictCharField(max_length=200)
    content = StrictCharField(max_length=10_000, trim_whitespace=False)


class PostUpdateInput(StrictSerializer):
    title = StrictCharField(max_length=200, required=False)
    content = StrictCharField(max_length=10_000, trim_whitespace=False, required=False)
