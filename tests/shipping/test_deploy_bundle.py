"""The source bundle `eb` uploads: built from git HEAD of a prepared project, then opened and inspected."""

from __future__ import annotations

import json
import stat
import zipfile

import pytest
import yaml

from ship_support import TOKEN, commit_all, make_ship_project
from tand.shipping.bake import STORE_DIR, stage_store
from tand.config import parse_config
from tand.shipping.eb import HOOK, DeployError, build_bundle, render, settings_from


def _settings(project, environ):
    return settings_from(parse_config(json.loads((project / "config.json").read_text())), environ, region="us-east-1")


@pytest.fixture(scope="module")
def bundle(trained_model, tmp_path_factory):
    project = make_ship_project(tmp_path_factory.mktemp("bundle") / "fork", trained_model.config)
    (project / "data").mkdir()
    (project / "data" / "data.csv").write_text("a,b\n1,2\n")
    (project / "tests").mkdir()
    (project / "tests" / "test_x.py").write_text("def test_x(): pass\n")
    commit_all(project)
    settings = _settings(project, {"API_TOKEN": TOKEN, "MLFLOW_TRACKING_URI": trained_model.project.tracking_uri})
    stage_store(settings.tracking_uri, settings.model_name, settings.alias, project, project / STORE_DIR)
    path = build_bundle(project, render(project, settings), settings.secrets)
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: (info, archive.read(info)) for info in archive.infolist()}
    return project, settings, entries


def test_the_bundle_holds_what_the_instance_builds_and_runs(bundle):
    _, _, entries = bundle
    names = set(entries)
    for required in ("Dockerfile", ".dockerignore", "requirements-serve.txt", "config.json", "app/main.py",
                     "src/tand/tracking/registry.py", "deploy/docker/warm_start.py", ".ebextensions/01-environment.config",
                     ".ebextensions/02-scaling.config", ".platform/nginx/conf.d/tand.conf", HOOK,
                     ".platform/confighooks/postdeploy/10_model_refresh_timer.sh", ".platform/tand/tand-model-refresh",
                     ".platform/tand/tand-model-refresh.service", ".platform/tand/tand-model-refresh.timer",
                     "build/model-store/database.db", "build/model-store/MODEL_STORE.txt"):
        assert required in names, required
    assert any(n.startswith("build/model-store/mlruns/") and n.endswith("/model.pkl") for n in names)
    # Not uploaded: data, tests, env files (secrets live there), the full store, the template sources.
    assert not [n for n in names if n.startswith(("data/", "tests/", "env_files/", "mlruns/", "deploy/eb/", ".git/"))]
    assert "database.db" not in names


def test_no_token_anywhere_and_hooks_are_executable_with_lf(bundle):
    _, _, entries = bundle
    for name, (info, data) in entries.items():
        assert TOKEN.encode() not in data, name
        mode = info.external_attr >> 16
        assert stat.S_ISREG(mode), name
        if name.startswith((".platform/hooks/", ".platform/confighooks/")) or name == ".platform/tand/tand-model-refresh":
            assert mode & 0o111 and data.startswith(b"#!/bin/bash\n") and b"\r" not in data, name
    for name in (".ebextensions/01-environment.config", ".ebextensions/02-scaling.config"):
        assert "option_settings" in yaml.safe_load(entries[name][1])


def test_the_bundle_is_committed_sources_not_the_working_tree(bundle):
    project, settings, _ = bundle
    (project / "app" / "main.py").write_text("uncommitted edit\n")
    path = build_bundle(project, render(project, settings), settings.secrets)
    with zipfile.ZipFile(path) as archive:
        assert archive.read("app/main.py") != b"uncommitted edit\n"


def test_a_secret_in_a_committed_file_stops_the_bundle(bundle):
    project, settings, _ = bundle
    config = json.loads((project / "config.json").read_text())
    config["app"]["__help"] = f"token {TOKEN}"
    (project / "config.json").write_text(json.dumps(config))
    commit_all(project)
    with pytest.raises(DeployError, match=r"a secret's value is in files the bundle would upload: API_TOKEN \(in config.json\)"):
        build_bundle(project, render(project, settings), settings.secrets)
