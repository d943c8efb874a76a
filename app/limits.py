"""The request-body size limit, for bodies with a Content-Length and chunked ones alike.

Starlette buffers whatever a client sends to an endpoint that reads the body. /predict is the
only endpoint that reads one, so it reads through `read_body`: a Content-Length over the
limit is refused before reading, and a chunked body is counted as it arrives and cut off at
the limit, so a client cannot make a worker buffer gigabytes. (Doing it here rather than in a
middleware keeps every other request free of the wrapping.)
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, max_bytes: int) -> bytes:
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > max_bytes:
                raise BodyTooLarge
            break
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large(max_bytes: int) -> JSONResponse:
    # Connection: close, so the server does not read (or wait for) the rest of the body.
    detail = f"request body too large: the limit is {max_bytes} bytes (MAX_BODY_BYTES); split the batch"
    return JSONResponse({"detail": detail}, status_code=413, headers={"Connection": "close"})
