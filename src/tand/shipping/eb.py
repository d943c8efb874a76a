"""Elastic Beanstalk, Docker platform on Amazon Linux 2023: the settings, the rendered files, the bundle.

`invoke deploy-eb` renders deploy/eb/ (templates with `{{ name }}` placeholders) and builds the
source bundle that `eb` uploads: `git archive HEAD` of what the image needs, plus the rendered
.ebextensions/.platform files and, with the embedded SQLite store, the baked model. The bundle is
a zip named in .elasticbeanstalk/config.yml (`deploy: artifact:`), so what is uploaded is exactly
this file: nothing generated is committed, and a secret is never in it (checked on every build).
The `eb` command chain and the checks before it live in tand.shipping.eb_chain.
"""

from __future__ import annotations

import io
import json
import re
import stat
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tand.shipping.bake import MARKER, STORE_DIR
from tand.config import DEFAULT_TRACKING_URI, EXAMPLE_TOKEN, Config
from tand.shipping.docker import CONTAINER_PORT
from tand.errors import TandError
from tand.tracking.stores import sqlite_path

PLATFORM = "Docker running on 64bit Amazon Linux 2023"
TEMPLATES = Path("deploy") / "eb"
BUNDLE = Path("build") / "eb" / "bundle.zip"
# What the image build needs from git HEAD; data, tests and env files stay out of the upload.
BUNDLE_SOURCES = ("Dockerfile", ".dockerignore", "requirements-serve.txt", "config.json", "app", "src", "deploy/docker")
# Rendered once, installed twice: after deployments and after configuration changes (`eb setenv`).
HOOK = ".platform/hooks/postdeploy/10_model_refresh_timer.sh"
HOOK_COPIES = {HOOK: (".platform/confighooks/postdeploy/10_model_refresh_timer.sh",)}
SCALING = ".ebextensions/02-scaling.config"
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{2,38}[A-Za-z0-9]$")


class DeployError(TandError):
    """Deployment cannot go ahead; the message says why and what to do."""


@dataclass(frozen=True)
class DeploySettings:
    app: str
    env: str
    region: str | None
    model_name: str
    alias: str
    tracking_uri: str
    single: bool
    min_instances: int
    max_instances: int
    instance_types: str
    workers: int
    refresh_schedule: str
    refresh_interval: float
    max_body_bytes: int
    scale_up_latency: float
    scale_down_latency: float
    secrets: dict = field(default_factory=dict, repr=False)

    @property
    def baked(self) -> bool:
        return sqlite_path(self.tracking_uri) is not None


@dataclass(frozen=True)
class RenderedFile:
    path: str  # inside the bundle, POSIX
    text: str
    mode: int


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")[:40].strip("-") or "tabular-model"


def check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise DeployError(f"--{kind} {name!r}: use 4 to 40 letters, digits and hyphens, not starting or ending with a hyphen")
    return name


def settings_from(cfg: Config, environ, app=None, env=None, region=None, single=None, min_instances=None,
                  max_instances=None, instance_types=None) -> DeploySettings:
    """Flags win over config.json; the secrets come from the environment (env files loaded into it)."""
    deploy = cfg.deploy
    model_name = environ.get("MODEL_NAME") or cfg.mlflow.model_name
    app = check_name("app", app or slug(model_name))
    low = min_instances if min_instances is not None else deploy.min_instances
    high = max_instances if max_instances is not None else deploy.max_instances
    if not 1 <= low <= high:
        raise DeployError(f"instance counts must satisfy 1 <= min ({low}) <= max ({high})")
    return DeploySettings(
        app=app,
        env=check_name("env", env or f"{app[:36].rstrip('-')}-api"),
        region=region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None,
        model_name=model_name,
        alias=(environ.get("MODEL_ALIAS") or cfg.mlflow.alias).strip(),
        tracking_uri=environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI,
        single=deploy.single_instance if single is None else single,
        min_instances=low,
        max_instances=high,
        instance_types=instance_types or deploy.instance_types,
        workers=deploy.workers,
        refresh_schedule=deploy.refresh_schedule,
        refresh_interval=cfg.app.refresh_interval,
        max_body_bytes=cfg.app.max_body_bytes,
        scale_up_latency=deploy.scale_up_latency,
        scale_down_latency=deploy.scale_down_latency,
        secrets=secrets_from(environ),
    )


def secrets_from(environ) -> dict[str, str]:
    """Values that reach the environment only through `eb create --envvars` / `eb setenv`."""
    token = environ.get("API_TOKEN", "").strip()
    if not token:
        raise DeployError("API_TOKEN is not set; export your own token (or set it in env_files/app.env, not committed)")
    if token == EXAMPLE_TOKEN:
        raise DeployError(
            "API_TOKEN is the example value from env_files/app.env; set your own: "
            'export API_TOKEN=$(python -c "import secrets; print(secrets.token_urlsafe(32))")'
        )
    found = {"API_TOKEN": token}
    uri = environ.get("MLFLOW_TRACKING_URI", "")
    if urlsplit(uri).password:
        found["MLFLOW_TRACKING_URI"] = uri
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        if environ.get(name):
            found[name] = environ[name]
    for name, value in found.items():
        if "," in value:
            raise DeployError(f"{name} contains a comma, which `eb --envvars` cannot pass; choose another value")
    return found


def environment_properties(settings: DeploySettings) -> dict[str, str]:
    """The non-secret environment properties written into .ebextensions."""
    properties = {
        "MODEL_NAME": settings.model_name,
        "MODEL_ALIAS": settings.alias,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PORT": str(CONTAINER_PORT),
        "WEB_CONCURRENCY": str(settings.workers),
        "MODEL_REFRESH_INTERVAL": f"{settings.refresh_interval:g}",
    }
    if settings.baked:
        properties["MLFLOW_TRACKING_URI"] = DEFAULT_TRACKING_URI  # the store baked under /app
    elif "MLFLOW_TRACKING_URI" not in settings.secrets:
        properties["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    return properties


def check_reachable_from_aws(settings: DeploySettings) -> None:
    if settings.baked:
        return
    host = (urlsplit(settings.tracking_uri).hostname or "").lower()
    if host in ("localhost", "0.0.0.0", "::1") or host.startswith("127."):
        raise DeployError(
            f"MLFLOW_TRACKING_URI points at this machine ({host}); instances on AWS cannot reach it. Use the "
            f"embedded store (sqlite:///database.db, baked into the bundle) or a tracking server AWS can reach"
        )


def template_values(settings: DeploySettings) -> dict[str, str]:
    lines = [f"    {name}: {json.dumps(value)}" for name, value in environment_properties(settings).items()]
    return {
        "environment_properties": "\n".join(lines),
        "scale_up_latency": f"{settings.scale_up_latency:g}",
        "scale_down_latency": f"{settings.scale_down_latency:g}",
        "max_body_bytes": str(settings.max_body_bytes),
        "refresh_schedule": settings.refresh_schedule,
    }


def _mode(path: str, text: str) -> int:
    # Hooks must be executable, and so is any script; set here, whatever mode a checkout gave the template.
    return 0o755 if path.startswith((".platform/hooks/", ".platform/confighooks/")) or text.startswith("#!") else 0o644


def fill(text: str, values: dict[str, str], where: str) -> str:
    """Replace every `{{ name }}`; an unknown name is an error naming the template."""

    def value(match: re.Match) -> str:
        if match.group(1) not in values:
            raise DeployError(f"{where}: unknown placeholder {{{{ {match.group(1)} }}}}")
        return values[match.group(1)]

    return _PLACEHOLDER.sub(value, text)


def render(project_dir: Path, settings: DeploySettings) -> list[RenderedFile]:
    """Every template under deploy/eb/, placeholders filled; LF line endings; hooks executable."""
    root = Path(project_dir) / TEMPLATES
    if not root.is_dir():
        raise DeployError(f"{root}: the Elastic Beanstalk templates are missing")
    values = template_values(settings)
    rendered: list[RenderedFile] = []
    for template in sorted(p for p in root.rglob("*") if p.is_file()):
        path = template.relative_to(root).as_posix()
        if path == SCALING and settings.single:
            continue  # no load balancer, no latency to scale on
        where = f"{TEMPLATES.as_posix()}/{path}"
        note = f"Rendered by `invoke deploy-eb` from {where}; edit the template, not this copy."
        text = fill(template.read_text(encoding="utf-8").replace("\r\n", "\n"), {**values, "rendered_note": note}, where)
        for target in (path, *HOOK_COPIES.get(path, ())):
            rendered.append(RenderedFile(target, text, _mode(target, text)))
    return rendered


def _add(archive: zipfile.ZipFile, name: str, data: bytes, mode: int) -> None:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.create_system = 3  # Unix: the instance's unzip keeps the mode bits (executable hooks)
    info.external_attr = (stat.S_IFREG | (0o755 if mode & 0o111 else 0o644)) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def committed_sources(project_dir: Path) -> bytes:
    """`git archive HEAD` of BUNDLE_SOURCES as a tar; a required source missing from HEAD is an error."""
    listed = subprocess.run(
        ["git", "ls-tree", "--name-only", "HEAD", "--", *BUNDLE_SOURCES],
        cwd=project_dir, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    if listed.returncode != 0:
        raise DeployError(f"git cannot read HEAD ({listed.stderr.strip()[:200]}); commit your project first (or use --init-git)")
    missing = sorted(set(BUNDLE_SOURCES) - {line.strip() for line in listed.stdout.splitlines()})
    if missing:
        raise DeployError(f"not committed, so not in the bundle (built from git HEAD): {', '.join(missing)}; commit them")
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD", "--", *BUNDLE_SOURCES],
        cwd=project_dir, capture_output=True, stdin=subprocess.DEVNULL,
    )
    if archive.returncode != 0:
        raise DeployError(f"git archive failed: {archive.stderr.decode(errors='replace').strip()[:200]}")
    return archive.stdout


def build_bundle(project_dir: Path, rendered: list[RenderedFile], secrets: dict[str, str]) -> Path:
    """Write build/eb/bundle.zip: committed sources + rendered files + the staged store; never a secret."""
    project_dir = Path(project_dir)
    target = project_dir / BUNDLE
    target.parent.mkdir(parents=True, exist_ok=True)
    store = project_dir / STORE_DIR
    if not (store / MARKER).is_file():
        raise DeployError(f"{store} is not staged; stage the store before building the bundle")
    entries: dict[str, tuple[bytes, int]] = {}
    with tarfile.open(fileobj=io.BytesIO(committed_sources(project_dir))) as tar:
        for member in tar.getmembers():
            if member.isfile():
                entries[member.name] = (tar.extractfile(member).read(), member.mode)
    for item in rendered:
        entries[item.path] = (item.text.encode("utf-8"), item.mode)
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        entries[(STORE_DIR / path.relative_to(store)).as_posix()] = (path.read_bytes(), 0o644)
    leaks = sorted({f"{name} (in {path})" for path, (data, _) in entries.items() for name, value in secrets.items()
                    if value and value.encode() in data})
    if leaks:
        raise DeployError(f"a secret's value is in files the bundle would upload: {'; '.join(leaks)}; remove it from them")
    with zipfile.ZipFile(target, "w") as archive:
        for name, (data, mode) in sorted(entries.items()):
            _add(archive, name, data, mode)
    return target
