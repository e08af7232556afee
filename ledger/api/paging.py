"""AIP-158 pagination: page sizes with defaults and caps, and opaque page tokens.

A token records where the next page starts and what it was a page *of* (the method and its
query), so a token cannot be replayed against another query; a changed or foreign token is
INVALID_ARGUMENT, never a wrong page. Tokens carry positions only, never data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from ledger.api.errors import ApiError

MAX_TOKEN = 256  # ours are ~60 characters; longer is not ours (and could nest deeply)
MAX_POSITION = 2**62  # stays a 64-bit integer in every store, whatever is added to it


def page_size(requested: int, *, default: int, maximum: int, field: str = "page_size") -> int:
    if requested < 0:
        raise ApiError.invalid(field, "must not be negative")
    if requested == 0:
        return default
    return min(requested, maximum)


def query_key(kind: str, query: str) -> str:
    return hashlib.sha256(f"{kind}\x00{query}".encode()).hexdigest()[:16]


def encode_token(kind: str, query: str, position: int) -> str:
    body = json.dumps({"q": query_key(kind, query), "p": position}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode("ascii").rstrip("=")


def decode_token(token: str, kind: str, query: str, *, field: str = "page_token") -> int:
    """The position the token continues from (0 for an empty token: the first page)."""
    if not token:
        return 0
    if len(token) > MAX_TOKEN:
        raise ApiError.invalid(field, "not a page token of this API")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ApiError.invalid(field, "not a page token of this API") from None
    if (
        not isinstance(body, dict)
        or body.get("q") != query_key(kind, query)
        or not isinstance(body.get("p"), int)
        or isinstance(body.get("p"), bool)
        or not 0 <= body["p"] < MAX_POSITION
    ):
        raise ApiError.invalid(field, "not a page token for this request")
    return int(body["p"])
