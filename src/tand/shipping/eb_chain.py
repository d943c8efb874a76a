"""The `invoke deploy-eb` chain: checks before anything runs, then the `eb` commands in order.

Everything that can be known locally is checked first (the EB CLI, AWS credentials, the token, a
tree the bundle would miss, a registry AWS cannot reach), so a failure leaves nothing half
deployed. Then: [git init/add/commit] → tests → render + bundle → eb init (when this folder is
not initialised for the app) → eb create (a new environment, secrets as --envvars) or eb deploy +
eb setenv (an existing one) → eb status for the URL. Commands go through invoke's context, so a
test can replay the whole chain with MockContext.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from tand.shipping.bake import STORE_DIR, stage_store
from tand.shipping.eb import (
    BUNDLE,
    BUNDLE_SOURCES,
    PLATFORM,
    DeployError,
    DeploySettings,
    build_bundle,
    check_reachable_from_aws,
    render,
)

EB_CONFIG = Path(".elasticbeanstalk") / "config.yml"
EB_VENV = Path(".venv") / "eb-cli" / "bin" / "eb"  # where .ci/run and the README install the EB CLI
COMMIT_MESSAGE = "preparing to deploy on aws-eb"
_AWS_FILES = ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")


@dataclass(frozen=True)
class Plan:
    settings: DeploySettings
    project_dir: Path
    eb: str
    init_git: bool
    run_tests: bool


def q(value) -> str:
    return shlex.quote(str(value))


def find_eb(project_dir: Path, environ=os.environ) -> str:
    candidates = (environ.get("EB_CLI"), shutil.which("eb", path=environ.get("PATH")), str(project_dir / EB_VENV))
    found = next((c for c in candidates if c and Path(c).is_file()), None)
    if not found:
        raise DeployError(
            "the EB CLI (`eb`) is not installed: pipx install awsebcli==3.27.5, or "
            "python -m venv .venv/eb-cli && .venv/eb-cli/bin/pip install -r requirements-eb.txt"
        )
    return found


def check_credentials(environ=os.environ) -> None:
    if environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY"):
        return
    if any(environ.get(name) for name in ("AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE")):
        return
    home = Path(environ.get("HOME", "~")).expanduser()
    files = [Path(environ[name]) for name in _AWS_FILES if environ.get(name)]
    files = files or [home / ".aws" / "credentials", home / ".aws" / "config"]
    if not any(path.is_file() for path in files):
        raise DeployError(
            "no AWS credentials found: run `aws configure` (or `eb init` once interactively), or export "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        )


def uncommitted(project_dir: Path) -> list[str]:
    """Changes under the bundle's sources that `git archive HEAD` would silently leave out."""
    result = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", *BUNDLE_SOURCES],
        cwd=project_dir, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise DeployError(
            f"{project_dir} is not a git repository: the bundle is built from git HEAD; "
            f"pass --init-git (git init, add, commit) or commit your project"
        )
    return [line[3:] for line in result.stdout.splitlines() if line.strip()]


def staged_secret_files(project_dir: Path, secrets: dict[str, str]) -> list[str]:
    """Staged files that hold a secret's value (`--init-git` must never commit one)."""
    found: set[str] = set()
    for value in filter(None, secrets.values()):
        result = subprocess.run(
            ["git", "grep", "--cached", "-l", "-I", "-F", "-e", value],
            cwd=project_dir, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )
        if result.returncode == 0:  # 1: no match; other codes: no index to search
            found.update(result.stdout.split())
    return sorted(found)


DATA_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".feather", ".arrow", ".xlsx", ".xls", ".jsonl", ".csv.gz", ".zip")
TEMPLATE_EXAMPLES = "examples/"  # the template's own example data, committed with it


def staged_data_files(project_dir: Path) -> list[str]:
    """Staged files newly added that look like data: anything under data/, or a data file's suffix."""
    result = subprocess.run(
        ["git", "diff", "--cached", "--name-only", "--diff-filter=A"],
        cwd=project_dir, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    names = result.stdout.splitlines() if result.returncode == 0 else []
    return [
        name for name in names
        if not name.startswith(TEMPLATE_EXAMPLES)
        and (name.startswith("data/") and name != "data/README.md" or name.lower().endswith(DATA_SUFFIXES))
    ]  # fmt: skip


def preflight(project_dir: Path, settings: DeploySettings, init_git: bool, run_tests: bool, environ=os.environ) -> Plan:
    """Every local check, before any command runs; each failure is one DeployError line."""
    project_dir = Path(project_dir)
    eb = find_eb(project_dir, environ)
    check_credentials(environ)
    check_reachable_from_aws(settings)
    if not settings.region and not _config(project_dir).get("global", {}).get("default_region"):
        raise DeployError("no AWS region: pass --region (e.g. --region us-east-1) or set AWS_DEFAULT_REGION")
    if not init_git:
        changed = uncommitted(project_dir)
        if changed:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            raise DeployError(
                f"uncommitted changes the bundle would miss (it is built from git HEAD): {shown}; "
                f"commit them, or pass --init-git to commit everything"
            )
    return Plan(settings, project_dir, eb, init_git, run_tests)


def _config(project_dir: Path) -> dict:
    path = project_dir / EB_CONFIG
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def set_artifact(project_dir: Path, artifact: Path = BUNDLE) -> None:
    """Tell `eb create`/`eb deploy` to upload our bundle instead of zipping `git archive HEAD` itself."""
    config = _config(project_dir)
    config.setdefault("deploy", {})["artifact"] = artifact.as_posix()
    path = project_dir / EB_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def environments(listing: str) -> set[str]:
    """Names from `eb list` (the default environment is marked with '* ')."""
    return {line.strip().removeprefix("* ").strip() for line in listing.splitlines() if line.strip()}


def cname(status: str) -> str | None:
    match = re.search(r"^\s*CNAME:\s*(\S+)", status, re.MULTILINE)
    return match.group(1) if match else None


def _region(settings: DeploySettings) -> str:
    return f" --region {q(settings.region)}" if settings.region else ""


def _pairs(values: dict[str, str]) -> str:
    return ",".join(f"{name}={value}" for name, value in values.items())


def _run(c, command: str, shown: str | None = None, hide: bool = False):
    """Run one step; `shown` is what is echoed when the command carries a secret."""
    print(f"$ {shown or command}", flush=True)
    result = c.run(command, warn=True, hide=hide, echo=False, pty=False)
    if not result.ok:
        first = shown or command
        detail = (result.stderr or result.stdout or "").strip().splitlines()
        reason = f": {detail[-1][:200]}" if detail else "; see its output above"
        raise DeployError(f"`{first}` failed (exit {result.exited}){reason}")
    return result


def prepare_bundle(plan: Plan) -> Path:
    settings = plan.settings
    baked = stage_store(settings.tracking_uri, settings.model_name, settings.alias, plan.project_dir, plan.project_dir / STORE_DIR)
    if baked:
        print(f"baked {settings.model_name} version {baked.version} ({settings.alias}) into the bundle")
    bundle = build_bundle(plan.project_dir, render(plan.project_dir, settings), settings.secrets)
    print(f"wrote {bundle.relative_to(plan.project_dir)} ({bundle.stat().st_size / 1e6:.1f} MB)")
    return bundle


def eb_command(plan: Plan, *words: str) -> str:
    """One `eb` command line, words already quoted, with --region when one was given."""
    return " ".join([q(plan.eb), *words]) + _region(plan.settings)


def init_command(plan: Plan) -> str:
    return eb_command(plan, "init", q(plan.settings.app), "--platform", q(PLATFORM))


def list_command(plan: Plan) -> str:
    return eb_command(plan, "list")


def create_command(plan: Plan, envvars: str) -> str:
    s = plan.settings
    size = ["--single"] if s.single else ["--elb-type", "application"]
    size += ["--instance-types", q(s.instance_types)]
    if not s.single:
        size += ["--min-instances", str(s.min_instances), "--max-instances", str(s.max_instances)]
    return eb_command(plan, "create", q(s.env), *size, "--envvars", envvars)


def run_chain(c, plan: Plan) -> str | None:
    """The commands, in order; returns the environment's URL when `eb status` names it."""
    s = plan.settings
    if plan.init_git:
        if not (plan.project_dir / ".git").exists():
            _run(c, "git init")
        _run(c, "git add -A")
        data = staged_data_files(plan.project_dir)
        if data:
            # Training data never reaches git through this flag, whatever .gitignore says.
            _run(c, "git reset -q -- " + " ".join(q(path) for path in data))
            print(f"left out of the commit (data files): {', '.join(data[:5])}{' ...' if len(data) > 5 else ''}")
        leaked = staged_secret_files(plan.project_dir, s.secrets)
        if leaked:
            _run(c, "git reset -q")
            raise DeployError(
                f"not committing: a secret's value is in {', '.join(leaked)}; remove it (keep secrets in your shell)"
            )
        _run(c, f"git diff --cached --quiet || git commit -m {q(COMMIT_MESSAGE)}")
    if plan.run_tests:
        _run(c, f"{q(sys.executable)} -m pytest -q -m {q('not slow')} tests")
    prepare_bundle(plan)
    if _config(plan.project_dir).get("global", {}).get("application_name") != s.app:
        _run(c, init_command(plan))
    set_artifact(plan.project_dir)
    hidden = ",".join(f"{name}=***" for name in s.secrets)
    if s.env in environments(_run(c, list_command(plan), hide=True).stdout):
        _run(c, eb_command(plan, "deploy", q(s.env)))
        _run(c, eb_command(plan, "setenv", q(_pairs(s.secrets)), "-e", q(s.env)),
             shown=eb_command(plan, "setenv", hidden, "-e", q(s.env)))
    else:
        _run(c, create_command(plan, q(_pairs(s.secrets))), shown=create_command(plan, hidden))
    return cname(_run(c, eb_command(plan, "status", q(s.env)), hide=True).stdout)
