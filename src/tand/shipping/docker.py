"""The Docker side of shipping: is an engine there, and the `docker build` / `docker run` command lines.

The tasks run these commands through invoke; this module only builds them and answers questions
about the engine, so the command lines are testable without Docker.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

from tand.errors import TandError


def quote(value) -> str:
    return shlex.quote(str(value))


CONTAINER_PORT = 8000  # the Dockerfile's EXPOSE and PORT default
DOCKER_APP_ENV = Path("env_files") / "docker_app.env"


class DockerError(TandError):
    """No usable Docker client or engine; the message says which and what to do."""


def require_engine(timeout: float = 30) -> None:
    """One clear line when there is no docker client or no engine answering it."""
    if shutil.which("docker") is None:
        raise DockerError("docker is not installed (no `docker` on PATH); install Docker and retry")
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise DockerError(f"no Docker engine answered within {timeout:.0f} s; start Docker and retry") from None
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no answer"])[-1][:200]
        raise DockerError(f"no Docker engine answers ({reason}); start Docker and retry")


def image_tag(model_name: str) -> str:
    """A valid image reference from a registered model name: lower case, [a-z0-9._-]."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", model_name.lower()).strip("-._") or "model"
    return f"{slug}-api:latest"


def build_command(tag: str, network: str | None = None, context: str = ".") -> str:
    parts = ["docker", "build", "--tag", quote(tag)]
    if network:
        parts += ["--network", quote(network)]
    return " ".join([*parts, quote(context)])


def run_command(
    tag: str,
    port: int,
    network: str | None = None,
    env_file: Path | str = DOCKER_APP_ENV,
    detach: bool = False,
    name: str | None = None,
    host: str = "127.0.0.1",
    pass_env: tuple[str, ...] | list[str] = (),
    workers: int | None = None,
) -> str:
    """`docker run` for the API, reachable on `host` only: with --network host the container listens on
    `host`:`port` itself (HOST, PORT); otherwise its port is published on `host`:`port`.

    `pass_env` names variables docker takes from the environment it runs in (`--env NAME`, no value on the
    command line): given after --env-file, they win over the file's values. `workers`: WEB_CONCURRENCY (the
    image's CMD then gives the workers a shared PROMETHEUS_MULTIPROC_DIR, so /metrics sums them)."""
    parts = ["docker", "run", "--rm", "--env-file", quote(env_file)]
    for key in pass_env:
        parts += ["--env", quote(key)]
    if workers is not None:
        parts += ["--env", quote(f"WEB_CONCURRENCY={int(workers)}")]
    if detach:
        parts.append("--detach")
    if name:
        parts += ["--name", quote(name)]
    if network:
        parts += ["--network", quote(network)]
    if network == "host":
        parts += ["--env", quote(f"HOST={host}"), "--env", quote(f"PORT={port}")]
    elif network != "none":
        address = f"[{host}]" if ":" in host else host  # an IPv6 address in docker's ip:port:port form
        parts += ["--publish", quote(f"{address}:{port}:{CONTAINER_PORT}")]
    return " ".join([*parts, quote(tag)])


def reachable_from_other_machines(host: str, network: str | None) -> bool:
    """Whether `docker run` as above answers beyond this machine (`--network none`: nobody outside the container)."""
    return network != "none" and not (host == "localhost" or host == "::1" or host.startswith("127."))


def image_id(reference: str) -> str | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", reference],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    return (result.stdout.strip() or None) if result.returncode == 0 else None


def remove_if_untagged(image: str) -> bool:
    """Remove an image a rebuild left without a tag (the classic builder keeps it, whole on vfs). Not forced:
    docker keeps it while a container uses it. Returns whether it is gone."""
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{len .RepoTags}}", image],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0 or result.stdout.strip() != "0":
        return False
    return subprocess.run(["docker", "image", "rm", image], capture_output=True, stdin=subprocess.DEVNULL).returncode == 0


def base_image(dockerfile: Path) -> str | None:
    """The final stage's base image (the last FROM), to report what the Dockerfile adds over it."""
    froms = re.findall(r"(?im)^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)", dockerfile.read_text(encoding="utf-8"))
    return froms[-1] if froms else None


def image_size(reference: str) -> int | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", reference],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    return int(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip().isdigit() else None


def size_report(tag: str, dockerfile: Path) -> str:
    size = image_size(tag)
    if size is None:
        return f"built {tag}"
    base = base_image(dockerfile)
    base_size = image_size(base) if base else None
    added = f", {(size - base_size) / 1e6:.0f} MB over its base {base}" if base_size else ""
    return f"built {tag}: {size / 1e6:.0f} MB{added}"
