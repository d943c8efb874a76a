"""Build-time check and warm start for the Docker image. The Dockerfile runs it once, as root, then deletes it.

- Imports what serving imports, so their bytecode is compiled into the image: at run time the
  packages are read-only to the non-root user, and each worker would otherwise compile MLflow,
  pandas and scikit-learn in memory at every start.
- When a store is baked in (./database.db), starts the app once through its ASGI lifespan and asks
  /health/ready: the model must load here, or the build fails now rather than on a server. The
  app also writes its model snapshot, so containers start without importing MLflow.
The token is random and lives only in this process: no token is written into the image.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from pathlib import Path


async def _get(app, path: str) -> tuple[int, bytes]:
    """One GET request straight through the ASGI interface (no server, no HTTP client needed)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": [],
        "server": ("warm-start", 80), "client": ("127.0.0.1", 1),
    }
    answer = {"status": 0, "body": b""}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer["status"], answer["body"]


async def _ready() -> tuple[int, bytes]:
    from app.main import create_app

    app = create_app()
    async with app.router.lifespan_context(app):
        return await _get(app, "/health/ready")


def main() -> int:
    os.environ["API_TOKEN"] = secrets.token_urlsafe(32)
    os.environ["MODEL_REFRESH_INTERVAL"] = "0"  # no background refresh in this one-shot process
    import app.main  # noqa: F401
    import mlflow.sklearn  # noqa: F401
    import sklearn.compose, sklearn.impute, sklearn.pipeline, sklearn.preprocessing  # noqa: E401, F401
    import uvicorn.main  # noqa: F401

    if not Path("database.db").is_file():
        print("warm start: no baked store; the container loads from MLFLOW_TRACKING_URI at run time")
        return 0
    status, body = asyncio.run(_ready())
    if status != 200:
        reason = f"/health/ready answered {status}: {body.decode()[:500]}"
        print(f"warm start: the baked model does not load ({reason})", file=sys.stderr)
        return 1
    print(f"warm start: the baked model loads: {body.decode()[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
