"""HTTP validators both pools share: the ETag of a version, conditional headers (RFC 9110
section 13), and the X-Min-Version header. Stdlib only: the read hot path calls these.

Every answer's ETag is the strong tag `"<version>"`; HAProxy's edge (deploy/edge.lua)
writes and compares the same.
"""

import re

# One entity-tag of a list: optional weak prefix, then a quoted opaque tag (RFC 9110 8.8.3).
_ENTITY_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')
ANY = "*"


def etag_for(version: int) -> str:
    return f'"{version}"'


def is_version(raw: str) -> bool:
    """Whether a header value can be a version (X-Min-Version, If-Match's tag): a non-negative
    integer of at most 18 ASCII digits (str.isdigit alone takes "²", which int() refuses)."""
    return raw.isascii() and raw.isdigit() and len(raw) <= 18


def entity_tags(header: str) -> list[tuple[bool, str]] | None:
    """The (weak, opaque-tag) pairs of an If-Match/If-None-Match list; None if malformed."""
    tags, position = [], 0
    while position < len(header):
        match = _ENTITY_TAG.match(header, position)
        if match is None or match.end() == position:
            return None
        tags.append((match.group(1) is not None, match.group(2)))
        position = match.end()
    return tags


def none_match(header: str | None, version: int) -> bool:
    """If-None-Match names the current representation (weak comparison): answer 304 to a GET."""
    if header is None:
        return False
    if header.strip() == ANY:
        return True
    tags = entity_tags(header)
    return tags is not None and any(tag == str(version) for _weak, tag in tags)
