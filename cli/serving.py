"""Tasks for the serving half: the prediction API under uvicorn."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile

from invoke import task
from invoke.exceptions import Exit

from tand.tracking.stores import redact
from cli.common import REPO_ROOT, known_errors, load_env

APP_FACTORY = "app.main:create_app"
# uvicorn's httptools protocol with header-size and slow-client limits, and query values kept out of the
# access log (app/http_limits.py; its settings: MAX_HEADER_BYTES, HEADER_TIMEOUT, BODY_TIMEOUT).
HTTP_PROTOCOL = "app.http_limits:LimitedHttpToolsProtocol"
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# What a supervisor or the terminal may send uvicorn: passed on to it (HUP restarts its workers, TTIN/TTOU add or remove one).
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


def uvicorn_command(host: str, port: int, workers: int, reload: bool) -> list[str]:
    """The uvicorn command line (an argument list: nothing goes through a shell)."""
    command = [sys.executable, "-m", "uvicorn", "--factory", APP_FACTORY, "--http", HTTP_PROTOCOL,
               "--host", str(host), "--port", str(port)]
    if reload:
        # --reload runs one process that restarts when the code changes; --workers does not apply.
        command += ["--reload", "--reload-dir", str(REPO_ROOT / "app"), "--reload-dir", str(REPO_ROOT / "src")]
    else:
        command += ["--workers", str(workers)]
    return command


@task(
    auto_shortflags=False,  # -h would read as --help
    help={
        "host": "Interface to bind (default 127.0.0.1, this machine only; 0.0.0.0 for every interface).",
        "port": "TCP port (default 8000).",
        "workers": "Worker processes (default 1); each loads the model and follows the alias on its own; /metrics sums them.",
        "reload": "Restart on code changes (development; one process).",
    }
)
def serve(c, host="127.0.0.1", port=8000, workers=1, reload=False):
    """Serve the production model over HTTP: POST /predict with the token in the TOKEN header."""
    load_env("app.env")
    port, workers = int(port), int(workers)
    if not 0 <= port <= 65535:
        raise Exit(f"error: --port {port} is not a TCP port (0-65535)", code=1)
    if workers < 1:
        raise Exit(f"error: --workers {workers} must be at least 1", code=1)
    from app.settings import Settings

    # Checked here too: with several workers, uvicorn would restart a worker that exits, for ever.
    with known_errors():
        settings = Settings.from_env()
    print(
        f"serving {settings.model_name!r} alias {settings.model_alias!r} from {redact(settings.tracking_uri)} "
        f"on http://{host}:{port} ({workers if not reload else 1} worker{'s' if workers > 1 and not reload else ''}); "
        f"docs at http://{host}:{port}/docs",
        flush=True,
    )
    command = uvicorn_command(host, port, workers, reload)
    if workers > 1 and not reload and not os.environ.get(METRICS_DIR):
        raise Exit(code=run_with_metrics_dir(command))
    # Replace this process: signals (Ctrl-C, SIGTERM from a supervisor) reach uvicorn directly.
    os.execv(command[0], command)


def run_with_metrics_dir(command: list[str]) -> int:
    """Run uvicorn with a fresh PROMETHEUS_MULTIPROC_DIR, so /metrics sums every worker (app/metrics.py),
    and remove the folder when it exits: counts from an earlier start must not add up with these.
    Signals sent to this process are passed on; uvicorn dies with it. Returns uvicorn's exit status."""
    directory = tempfile.mkdtemp(prefix="tand-metrics-")
    try:
        process = subprocess.Popen(command, env={**os.environ, METRICS_DIR: directory}, preexec_fn=_die_with_parent)
        for number in FORWARDED:
            signal.signal(number, lambda received, frame: process.send_signal(received))
        status = process.wait()  # the handlers run while it waits; wait() resumes after each
        return status if status >= 0 else 128 - status  # killed by a signal: the shell's convention
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when `invoke serve` dies, even by SIGKILL (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
