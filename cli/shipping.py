"""Tasks for shipping: the Docker image (build, run) and AWS Elastic Beanstalk (deploy).

Run them from the project root: the image is built from it, with the served model's store staged
in build/model-store/ first, and env_files/docker_app.env is read from it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from invoke import task
from invoke.exceptions import Exit

from tand.config import DEFAULT_TRACKING_URI, EXAMPLE_TOKEN
from cli.common import known_errors, load_env, whole_number
from cli.envfiles import parse_env_file

# docker run's own exit codes when the server is stopped with Ctrl-C (130) or `docker stop` (143).
_STOPPED = (0, 130, 143)


def _served_model(project: Path) -> tuple[str, str, str]:
    """(model name, alias, tracking URI) the image serves: the environment wins over config.json."""
    from tand.config import load_config

    cfg = load_config(project / "config.json")
    name = os.environ.get("MODEL_NAME") or cfg.mlflow.model_name
    alias = (os.environ.get("MODEL_ALIAS") or cfg.mlflow.alias).strip()
    return name, alias, os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


@task(
    help={
        "tag": "Image name:tag (default: <model name>-api:latest).",
        "network": "Network for the build's RUN steps, passed to docker build (e.g. host).",
    }
)
def docker_build(c, tag=None, network=None):
    """Build the API's Docker image; with the embedded SQLite store, the production model is baked in."""
    load_env("app.env")
    from tand.shipping import docker as container
    from tand.shipping.bake import STORE_DIR, stage_store

    project = Path.cwd()
    if not (project / "Dockerfile").is_file():
        raise Exit(f"error: no Dockerfile in {project}; run invoke from the project root", code=1)
    with known_errors():
        container.require_engine()
        name, alias, uri = _served_model(project)
        baked = stage_store(uri, name, alias, project, project / STORE_DIR)
    if baked:
        print(f"baking {name} version {baked.version} ({alias}): {len(baked.files)} files in {STORE_DIR}/")
    else:
        print("no store baked: the container loads the model from MLFLOW_TRACKING_URI (env_files/docker_app.env)")
    tag = tag or container.image_tag(name)
    previous = container.image_id(tag)
    started = time.monotonic()
    result = c.run(container.build_command(tag, network), echo=True, warn=True, pty=False)
    if not result.ok:
        raise Exit(f"error: docker build failed (exit {result.exited}); see its output above", code=1)
    print(f"{container.size_report(tag, project / 'Dockerfile')}, in {time.monotonic() - started:.0f} s")
    # The image the tag named before is now untagged: remove it unless a container still uses it.
    if previous and previous != container.image_id(tag) and container.remove_if_untagged(previous):
        print(f"removed the previous {tag} image ({previous.removeprefix('sha256:')[:12]}), left untagged by this build")
    print(f"run it: invoke docker-run --tag {tag}")


@task(
    help={
        "tag": "Image to run (default: <model name>-api:latest).",
        "port": "Port on this machine (default 8000); with --network host the container listens on it itself.",
        "host": "Interface to serve on (default 127.0.0.1, this machine only); beyond it, the example token is refused.",
        "network": "Docker network, e.g. host (then HOST and PORT are set to --host and --port) or none.",
        "detach": "Run in the background and print the container id (stop it with docker stop ID).",
        "name": "Container name.",
        "workers": "Uvicorn worker processes in the container (WEB_CONCURRENCY, default 1); /metrics sums them.",
    }
)
def docker_run(c, tag=None, port=8000, host="127.0.0.1", network=None, detach=False, name=None, workers=None):
    """Run the API's image with env_files/docker_app.env (token, tracking URI, alias); your environment wins."""
    from tand.shipping import docker as container

    project = Path.cwd()
    env_file = project / container.DOCKER_APP_ENV
    port = int(port)
    if not 1 <= port <= 65535:
        raise Exit(f"error: --port {port} is not a TCP port (1-65535)", code=1)
    workers = whole_number("--workers", workers)
    if workers is not None and workers < 1:
        raise Exit("error: --workers must be 1 or more", code=1)
    if not env_file.is_file():
        raise Exit(f"error: {env_file} is missing; it holds the container's settings (API_TOKEN, MLFLOW_TRACKING_URI)", code=1)
    try:
        settings = parse_env_file(env_file)
    except ValueError as exc:
        raise Exit(f"error: {exc}", code=1) from None
    # As everywhere else, a variable already set in your environment wins over the file: docker takes it
    # from the environment (`--env NAME`), so its value is never on the command line that is echoed.
    passed = [key for key in settings if key in os.environ]
    token = os.environ.get("API_TOKEN", settings.get("API_TOKEN", ""))
    if token == EXAMPLE_TOKEN and container.reachable_from_other_machines(host, network):
        # Refused, not warned: the example token is public (it is in this template), and a detached
        # container's warning is read by no one.
        raise Exit(
            f"error: refusing to serve on {host} with the example API_TOKEN from {container.DOCKER_APP_ENV}: anyone who "
            "can reach this machine could call the API; export API_TOKEN=$(python -c \"import secrets; "
            "print(secrets.token_urlsafe(32))\") first, or serve on --host 127.0.0.1",
            code=1,
        )
    with known_errors():
        container.require_engine()
        tag = tag or container.image_tag(_served_model(project)[0])
    command = container.run_command(tag, port, network, container.DOCKER_APP_ENV, detach=detach, name=name, host=host,
                                    pass_env=passed, workers=workers)
    if passed:
        print(f"from your environment (wins over {container.DOCKER_APP_ENV}): {', '.join(passed)}", flush=True)
    if not detach and network != "none":
        print(f"serving on http://{host}:{port} (docs at /docs); Ctrl-C stops it", flush=True)
    result = c.run(command, echo=True, warn=True, pty=False)
    if result.exited not in _STOPPED:
        raise Exit(f"error: docker run failed (exit {result.exited}); see its output above", code=1)


@task(
    help={
        "init-git": "git init (when there is no repository), add and commit everything: the bundle is built from git HEAD.",
        "app": "Elastic Beanstalk application name (default: the model name).",
        "env": "Environment name (default: <app>-api).",
        "region": "AWS region, e.g. us-east-1 (default: AWS_DEFAULT_REGION, or the one `eb init` stored).",
        "single": "One instance, no load balancer (cheapest; no scaling). Default: config.json deploy.single_instance.",
        "min-instances": "Fewest instances (default: config.json deploy.min_instances); applies at creation.",
        "max-instances": "Most instances (default: config.json deploy.max_instances); applies at creation.",
        "instance-types": "Comma-separated EC2 types (default: config.json deploy.instance_types); applies at creation.",
        "skip-tests": "Do not run the quick test suite first.",
    }
)
def deploy_eb(c, init_git=False, app=None, env=None, region=None, single=False, min_instances=None,
              max_instances=None, instance_types=None, skip_tests=False):
    """Deploy the API to AWS Elastic Beanstalk (Docker, Amazon Linux 2023): tests, bundle, eb init/create/deploy."""
    load_env("app.env")
    from tand.config import load_config
    from tand.shipping.eb import settings_from
    from tand.shipping.eb_chain import preflight, run_chain

    project = Path.cwd()
    with known_errors():
        settings = settings_from(
            load_config(project / "config.json"), os.environ, app=app, env=env, region=region,
            single=True if single else None,
            min_instances=whole_number("--min-instances", min_instances),
            max_instances=whole_number("--max-instances", max_instances),
            instance_types=instance_types,
        )
        plan = preflight(project, settings, init_git=init_git, run_tests=not skip_tests)
        url = run_chain(c, plan)
    print(f"deployed {settings.model_name!r} to environment {settings.env!r} of application {settings.app!r}")
    if url:
        print(f"URL: http://{url}")
        print(
            f'try it: curl -X POST "http://{url}/predict" -H "TOKEN: $API_TOKEN" '
            f'-H "Content-Type: application/json" -d @request_model.json'
        )
    print(f"tear it down (stops the billing): eb terminate {settings.env} --force")
