"""The write API's only parser: a JSON object, of bounded size and depth.

DRF's JSONParser hands the body to the json module, whose recursion on a deeply nested array
ends in RecursionError (a 500), and lets a list or a string through to the serializers.
"""

import orjson
from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from cqrs_site.core.errors import InvalidInput, PayloadTooLarge

# The API's bodies are flat objects; one level of nesting is room enough.
MAX_DEPTH = 2


def _depth(value, limit: int, level: int = 1) -> int:
    if isinstance(value, dict):
        children = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return level - 1
    if level > limit:
        return level
    return max((_depth(child, limit, level + 1) for child in children), default=level)


class JSONObjectParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body is over {limit} bytes.")
        try:
            data = orjson.loads(body)  # its own nesting limit raises JSONDecodeError, not RecursionError
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"The request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidInput('The request body must be a JSON object, such as {"username": "alice"}.')
        if _depth(data, MAX_DEPTH) > MAX_DEPTH:
            raise InvalidInput(f"The request body is nested more than {MAX_DEPTH} levels deep.")
        return data
