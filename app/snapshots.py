"""Compiled-model snapshots on local disk: a restart serves a known version without MLflow or scikit-learn.

Loading a version through MLflow imports MLflow and scikit-learn and unpickles the pipeline:
seconds of a cold start. When a version compiles to NumPy alone (the template's MLP), its
arrays and feature schema are written here as one .npz file (arrays and JSON, no pickle:
loading it cannot run code). A process that finds the alias still on that version reads the
file instead. A registered version is immutable and its source (MLflow 3: the logged model's
unique id) names its files, so (name, version, run id, source) is the key: a copy of the store
(the Docker image's) finds the snapshots of the original.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.compiled import CompiledPreprocessor, NumpyMLP, from_arrays, to_arrays
from app.registry_lookup import AliasTarget
from tand.schema import FeatureSchema

FORMAT = 1  # bump when the compiled layout changes: older files are then ignored
log = logging.getLogger("app")


@dataclass(frozen=True)
class Snapshot:
    schema: FeatureSchema
    metrics: dict
    example: dict
    preprocessor: CompiledPreprocessor
    mlp: NumpyMLP


class SnapshotCache:
    def __init__(self, root: Path, model_name: str):
        self.dir = Path(root)
        self.model_name = model_name
        self._warned = False

    def path(self, target: AliasTarget) -> Path:
        key = json.dumps([self.model_name, target.version, target.run_id, target.source])
        return self.dir / f"v{target.version}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"

    def read(self, target: AliasTarget) -> Snapshot | None:
        path = self.path(target)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {name: data[name] for name in data.files if name != "meta"}
            identity = (meta["name"], meta["version"], meta["run_id"], meta["source"])
            if meta.get("format") != FORMAT or identity != (self.model_name, target.version, target.run_id, target.source):
                return None
            preprocessor, mlp = from_arrays(meta["compiled"], arrays)
            schema = FeatureSchema.from_dict(meta["schema"])
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            log.warning("ignoring unreadable model snapshot %s (%s); loading from the registry", path, exc)
            return None
        return Snapshot(schema, meta["metrics"], meta["example"], preprocessor, mlp)

    def write(self, target: AliasTarget, snapshot: Snapshot) -> None:
        compiled, arrays = to_arrays(snapshot.preprocessor, snapshot.mlp)
        meta = {
            "format": FORMAT,
            "name": self.model_name,
            "version": target.version,
            "run_id": target.run_id,
            "source": target.source,
            "schema": snapshot.schema.to_dict(),
            "metrics": snapshot.metrics,
            "example": snapshot.example,
            "compiled": compiled,
        }
        temporary = None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            # Written aside and renamed: another worker never reads half a file.
            handle, temporary = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
            with os.fdopen(handle, "wb") as file:
                np.savez(file, meta=np.array(json.dumps(meta)), **arrays)
            os.replace(temporary, self.path(target))
            temporary = None
        except OSError as exc:
            if not self._warned:
                log.warning("cannot write model snapshots to %s (%s); cold starts load from the registry", self.dir, exc)
                self._warned = True
            return
        finally:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
        log.info("wrote model snapshot %s", self.path(target))
