"""The API token: sent in the `TOKEN` header (the seed's clients) or as `Authorization: Bearer <token>`.

Compared in constant time, as bytes: `secrets.compare_digest` raises TypeError on non-ASCII
str, which would be a 500. The token is never logged nor echoed in an answer.
"""

from __future__ import annotations

import secrets

from fastapi import HTTPException, Request

UNAUTHORIZED = "missing or invalid API token: send it in the TOKEN header or as 'Authorization: Bearer <token>'"

# Declared in the OpenAPI document (/docs gets an "Authorize" button) by app.openapi; the check itself
# is one plain dependency that reads the raw headers, cheaper than one FastAPI security object per scheme.
SECURITY_SCHEMES = {
    "TOKEN": {"type": "apiKey", "in": "header", "name": "TOKEN", "description": "The API token (the seed's header)."},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "The same token as a bearer token."},
}
SECURITY = [{"TOKEN": []}, {"Bearer": []}]


def presented_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The token from the raw ASGI headers, as the client sent it: no decoding, nothing to re-encode."""
    token = bearer = None
    for name, value in headers:
        if name == b"token":
            token = value
        elif name == b"authorization":
            bearer = value
    if token is not None:
        return token
    if bearer is None:
        return None
    scheme, _, credentials = bearer.partition(b" ")
    return credentials.strip() if scheme.lower() == b"bearer" else None


def token_checker(expected: str):
    expected_bytes = expected.encode("utf-8")

    async def require_token(request: Request) -> None:
        presented = presented_token(request.scope["headers"])
        if presented is None or not secrets.compare_digest(presented, expected_bytes):
            raise HTTPException(status_code=401, detail=UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})

    return require_token
