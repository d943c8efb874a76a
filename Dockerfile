# The prediction API: FastAPI under uvicorn, serving the model the MLflow registry alias points to.
# Build it with `invoke docker-build`: it first stages the served model in build/model-store/ (a trimmed copy
# of database.db + mlruns/ when MLFLOW_TRACKING_URI is the embedded SQLite store; only a note otherwise).
# The image carries no PyTorch: the template's MLP predicts with NumPy. A model that needs PyTorch at serving
# time can add it, CPU-only:
#   docker build --build-arg EXTRA_PACKAGES="--extra-index-url https://download.pytorch.org/whl/cpu torch==2.13.0" .
# One stage, so a build leaves no untagged builder image behind (the classic builder keeps every stage's image,
# 771 MB here), and the dependency layer comes before the project's files and depends on the requirements alone: a rebuild
# after `invoke train` reuses it, with the classic builder and BuildKit alike. Few instructions: each one is a
# layer, and some storage drivers (vfs) copy every layer whole.
FROM python:3.11-slim

# --- How the API runs, first: every instruction is a layer, and a storage driver that copies each layer whole
# (vfs) copies the whole image for each one; before the dependency layer they copy only the base. Editing these
# rebuilds the dependency layer too.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app/src:/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/home/app/.cache \
    MLFLOW_TRACKING_URI=sqlite:///database.db \
    MLFLOW_DISABLE_TELEMETRY=true \
    MODEL_ALIAS=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    WEB_CONCURRENCY=1
WORKDIR /app
EXPOSE 8000
# Liveness through Python's urllib: no curl in the image.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT', '8000'), timeout=4)"]
# exec: uvicorn becomes PID 1 and gets `docker stop`'s SIGTERM. --http: uvicorn's httptools protocol with the
# header-size and slow-client limits (MAX_HEADER_BYTES, HEADER_TIMEOUT, BODY_TIMEOUT), as `invoke serve` runs it.
# With several workers (WEB_CONCURRENCY, as Elastic Beanstalk sets it) they share a fresh PROMETHEUS_MULTIPROC_DIR,
# so GET /metrics sums every worker's counts (app/metrics.py) instead of answering with one worker's.
CMD ["sh", "-c", "if [ \"${WEB_CONCURRENCY:-1}\" -gt 1 ] && [ -z \"${PROMETHEUS_MULTIPROC_DIR:-}\" ]; then PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) && export PROMETHEUS_MULTIPROC_DIR; fi; exec uvicorn --factory app.main:create_app --http app.http_limits:LimitedHttpToolsProtocol --host \"$HOST\" --port \"$PORT\" --workers \"$WEB_CONCURRENCY\""]

# --- The serving dependencies in a virtual environment, trimmed, in one layer.
# requirements-model.txt (staged by invoke docker-build): the served model's own library, if any (LightGBM,
# XGBoost or CatBoost) and the Debian packages it needs (`# apt: ...` lines): an image carries only what its model needs.
COPY requirements-serve.txt build/model-store/requirements-model.txt /tmp/
ARG EXTRA_PACKAGES=""
# binutils only for `strip`, installed and purged within this one step so none of it reaches the layer (pinning
# a Debian revision would break the build when the python:3.11-slim tag moves to a newer Debian). No bytecode
# yet (the last step compiles what serving imports), no packages' own test suites, extension modules without
# symbols; the wheels' bundled *.libs are left alone (stripping them breaks them).
# hadolint ignore=DL3008,SC2086,SC2046
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils $(sed -n 's/^# apt: //p' /tmp/requirements-model.txt) \
 && python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check --no-compile \
      -r /tmp/requirements-serve.txt -r /tmp/requirements-model.txt $EXTRA_PACKAGES \
 && find /opt/venv -depth -type d -name tests -exec rm -rf {} + \
 && find /opt/venv -type f -name '*.so*' ! -path '*.libs/*' -exec strip --strip-unneeded {} + \
 && apt-get purge -y --auto-remove binutils \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log /tmp/requirements-serve.txt /tmp/requirements-model.txt

# .dockerignore lets in only: config.json, app/, src/, requirements-serve.txt, deploy/docker/warm_start.py
# and build/model-store/ (the baked store, moved to /app below and owned by root: the API reads the registry,
# it never writes it).
COPY . ./
# warm_start.py compiles the bytecode of what serving imports and, with a baked store, loads the model once
# (the build fails if it cannot) so containers start from the app's model snapshot.
RUN test -f build/model-store/MODEL_STORE.txt \
      || { echo "build/model-store/ is missing: build with 'invoke docker-build', which stages it" >&2; exit 1; } \
 && useradd --no-log-init --create-home --uid 10001 --user-group app \
 && mv build/model-store/* . \
 && PYTHONDONTWRITEBYTECODE='' python deploy/docker/warm_start.py \
 && rm -rf build deploy requirements-serve.txt requirements-model.txt \
 && chown -R app:app /home/app
USER 10001
