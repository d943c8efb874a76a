"""Compiled-model snapshots on local disk: a restart serves a known version without reading the registry's files.

Loading a version through MLflow imports MLflow and scikit-learn and unpickles the pipeline:
seconds of a cold start. When a version compiles to NumPy alone (the template's MLP), its
arrays and feature schema are written here as one .npz file (tand.compiled.model's format: arrays
and JSON, no pickle, so loading it cannot run code). Training logs the same file with the
version (tand.tracking.compiled_files reads it on a first load); a snapshot also spares a remote
artifact store the download. A process that finds the alias still on that version reads the
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


from tand.tracking.lookup import AliasTarget
from tand.compiled import model as compiled
from tand.compiled.model import CompiledPreprocessor, NumpyMLP
from tand.schema import FeatureSchema

log = logging.getLogger("app")


@dataclass(frozen=True)
class Snapshot:
    schema: FeatureSchema
    metrics: dict
    example: dict
    preprocessor: CompiledPreprocessor
    mlp: NumpyMLP

    @classmethod
    def from_loaded(cls, meta: dict, preprocessor: CompiledPreprocessor, mlp: NumpyMLP) -> Snapshot:
        """From what tand.compiled.model.load returns: a snapshot's file, or the one training logged with the version."""
        return cls(FeatureSchema.from_dict(meta["schema"]), meta["metrics"], meta["example"], preprocessor, mlp)

    def predictor(self):
        from app.predict.predictor import Predictor

        return Predictor(self.schema, preprocessor=self.preprocessor, estimator=self.mlp)

    @classmethod
    def from_file(cls, file) -> tuple[dict, Snapshot]:
        meta, preprocessor, mlp = compiled.load(file)
        return meta, cls.from_loaded(meta, preprocessor, mlp)


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
            meta, snapshot = Snapshot.from_file(path)
            identity = (meta["name"], meta["version"], meta["run_id"], meta["source"])
            if identity != (self.model_name, target.version, target.run_id, target.source):
                return None
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            log.warning("ignoring unreadable model snapshot %s (%s); loading from the registry", path, exc)
            return None
        return snapshot

    def write(self, target: AliasTarget, snapshot: Snapshot) -> None:
        meta = {
            "name": self.model_name,
            "version": target.version,
            "run_id": target.run_id,
            "source": target.source,
            "schema": snapshot.schema.to_dict(),
            "metrics": snapshot.metrics,
            "example": snapshot.example,
        }
        temporary = None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            # Written aside and renamed: another worker never reads half a file.
            handle, temporary = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
            with os.fdopen(handle, "wb") as file:
                compiled.save(file, snapshot.preprocessor, snapshot.mlp, meta)
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
