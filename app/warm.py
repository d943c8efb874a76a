"""Write the compiled-model snapshot for the version the alias points to, then exit.

    python -m app.warm        (same environment as the API: MLFLOW_TRACKING_URI, MODEL_CACHE_DIR, ...)

For an image build: run it after the store is copied in, and a container's first start reads the
snapshot (about a second) instead of importing MLflow and scikit-learn to unpickle the pipeline.
Exit status 1 with one line when the model cannot be loaded.
"""

from __future__ import annotations

import asyncio
import os
import sys

from app.store.serving import ModelStore
from app.settings import Settings
from tand.errors import TandError


def main() -> int:
    # No token is needed to read the registry; the API itself still refuses to start without one.
    env = {**os.environ, "API_TOKEN": os.environ.get("API_TOKEN") or "not-needed-to-warm"}
    try:
        settings = Settings.from_env(env)
        if settings.cache_dir is None:
            print("error: MODEL_CACHE_DIR is empty (snapshots off); nothing to write", file=sys.stderr)
            return 1
        store = ModelStore(settings)
        asyncio.run(store.refresh())
    except TandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    served = store.current
    if served.predictor.snapshot_parts is None:
        print(f"{served.name} version {served.version} needs scikit-learn at run time ({served.predictor.inference}); no snapshot")
    else:
        print(f"{served.name} version {served.version}: snapshot in {settings.cache_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
