"""The processes `invoke train` shares its work with (tand.training.workers), and what logging a model skips."""

import os
import signal
import sys

import numpy as np
import pytest
from conftest import example_csv

from tand.errors import ConfigError, TandError
from tand.models.network import NetworkParams, fit_network
from tand.training.workers import TorchProcess

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the worker processes are forked (Linux)")


def _params(**changes) -> NetworkParams:
    values = dict(hidden_sizes=(16,), dropout=0.1, lr=0.01, weight_decay=0.0, epochs=4, batch_size=32, patience=2,
                  validation_fraction=0.2, log_every=250, device="cpu", seed=3, progress=False)
    return NetworkParams(**{**values, **changes})


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 6)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64)


def test_the_torch_process_trains_the_same_network_as_inline(data):
    X, y = data
    process = TorchProcess()
    try:
        remote = process(X, y, 2, "cross_entropy", _params())
    finally:
        process.stop()
    inline = fit_network(X, y, 2, "cross_entropy", _params())
    assert remote.history == inline.history
    for a, b in zip(remote.weights + remote.biases, inline.weights + inline.biases):
        np.testing.assert_array_equal(a, b)


def test_the_torch_process_trains_again_when_called_again_as_a_binary_thresholds_out_of_fold_fits_do(data):
    X, y = data
    calls = []
    process = TorchProcess(meanwhile=lambda: calls.append("meanwhile"))
    try:
        first = process(X, y, 2, "cross_entropy", _params())
        folds = [process(X[part], y[part], 2, "cross_entropy", _params(seed=4)) for part in (slice(0, 100), slice(100, 200))]
    finally:
        process.stop()
    assert first.history == fit_network(X, y, 2, "cross_entropy", _params()).history
    for part, remote in zip((slice(0, 100), slice(100, 200)), folds):
        assert remote.history == fit_network(X[part], y[part], 2, "cross_entropy", _params(seed=4)).history
    assert calls == ["meanwhile"]  # the imports ahead of the metrics: once


def test_a_known_error_in_the_torch_process_arrives_as_itself(data):
    X, y = data
    process = TorchProcess()
    try:
        with pytest.raises(ConfigError, match="train.device: 'cuda' asked for"):
            process(X, y, 2, "cross_entropy", _params(device="cuda"))
    finally:
        process.stop()


def test_a_torch_process_that_died_is_one_clear_error(data):
    X, y = data
    process = TorchProcess()
    try:
        os.kill(process._process.pid, signal.SIGKILL)
        process._process.join()
        with pytest.raises(TandError, match="the PyTorch training process died"):
            process(X, y, 2, "cross_entropy", _params())
    finally:
        process.stop()


def test_meanwhile_runs_between_sending_the_job_and_the_answer(data):
    X, y = data
    # Inside `meanwhile` the answer must arrive (so the job was sent before) and still be unread.
    calls = []
    process = TorchProcess(meanwhile=lambda: calls.append(process._connection.poll(timeout=60)))
    try:
        fitted = process(X, y, 2, "cross_entropy", _params())
    finally:
        process.stop()
    assert calls == [True] and fitted.history


def test_small_batches_fit_on_one_thread_and_the_callers_threads_come_back(data, monkeypatch):
    import torch

    X, y = data
    before = torch.get_num_threads()
    set_to = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (set_to.append(n), real(n)))
    real(2)
    try:
        fit_network(X, y, 2, "cross_entropy", _params(epochs=1))  # 32 rows × 16 wide: one thread
        assert set_to == [1, 2] and torch.get_num_threads() == 2
        set_to.clear()
        fit_network(X, y, 2, "cross_entropy", _params(epochs=1, hidden_sizes=(256,), batch_size=256))
        assert set_to == [2], "a large batch keeps PyTorch's threads"
    finally:
        real(before)


def test_logged_requirements_are_the_installed_pins(trained_model):
    from importlib.metadata import version

    import mlflow

    from tand.tracking import registry

    uri = f"models:/{trained_model.model_name}/{trained_model.version}/requirements.txt"
    mlflow.set_tracking_uri(trained_model.project.tracking_uri)
    try:
        lines = set(open(mlflow.artifacts.download_artifacts(uri)).read().split())
    finally:
        mlflow.set_tracking_uri(None)
    assert {f"{name}=={version(name)}" for name in registry.RUNTIME_PACKAGES} <= lines
    assert f"mlflow=={mlflow.__version__}" in lines


def test_the_package_scan_is_skipped_only_while_logging(monkeypatch):
    from mlflow.utils import requirements_utils

    from tand.tracking import registry

    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)
    with registry._requirements_checked_without_package_scan():
        assert requirements_utils._MODULES_TO_PACKAGES["sklearn"] == ["scikit-learn"]
        assert requirements_utils._check_requirement_satisfied("numpy==0.0.1") is not None, "the check still runs"
    assert requirements_utils._MODULES_TO_PACKAGES is None, "later callers get MLflow's own scan"
    scanned = {"already": ["scanned"]}
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", scanned)
    with registry._requirements_checked_without_package_scan():
        assert requirements_utils._MODULES_TO_PACKAGES is scanned
    assert requirements_utils._MODULES_TO_PACKAGES is scanned


def test_a_torch_process_dying_under_the_fit_worker_is_named_as_such(tmp_path):
    from conftest import tiny_config
    from tand.config import parse_config
    from tand.training.data import load_dataset, split
    from tand.training.pipeline import build_pipeline
    from tand.training.workers import FitWorker

    cfg = parse_config(tiny_config(data_path=str(example_csv())))
    dataset = load_dataset(cfg.train)
    parts = split(dataset, cfg.train.test_size, cfg.train.seed)
    process = TorchProcess()
    worker = None
    try:
        os.kill(process._process.pid, signal.SIGKILL)
        process._process.join()
        worker = FitWorker(build_pipeline(dataset.schema, cfg.train, progress=False), parts, dataset.schema, process)
        with pytest.raises(TandError, match="^the PyTorch training process died"):
            worker.evaluation()
    finally:
        if worker is not None:
            worker.stop()
        process.stop()


def test_no_pytorch_is_one_clear_error(data, monkeypatch):
    X, y = data
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails, as where it is not installed
    with pytest.raises(ConfigError, match="'pytorch' needs PyTorch, which is not installed here"):
        fit_network(X, y, 2, "cross_entropy", _params())


def _own_priority() -> tuple[int, str]:
    import threading

    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), threading.current_thread().name


def test_the_store_work_beside_the_fit_runs_at_nice_19_in_a_thread_of_its_own_and_the_caller_keeps_its_priority():
    from tand.training.workers import LOWEST_PRIORITY, at_low_priority

    before = _own_priority()
    priority, thread = at_low_priority(_own_priority)
    assert priority == LOWEST_PRIORITY and thread != before[1]
    assert _own_priority() == before


def test_work_beside_the_fit_raises_its_own_error_in_the_caller():
    from tand.training.workers import at_low_priority

    def refuse(name):
        raise ConfigError(f"{name} is wrong")

    with pytest.raises(ConfigError, match="mlflow.model_name is wrong"):
        at_low_priority(refuse, "mlflow.model_name")


def test_the_data_files_digest_beside_the_reading_is_its_sha256_and_a_missing_file_raises_instead_of_hanging(tmp_path):
    import hashlib

    from tand.monitoring.model_card import digest_beside

    data = tmp_path / "data.csv"
    data.write_bytes(os.urandom(3_000_000))
    assert digest_beside(str(data)).result(timeout=60) == hashlib.sha256(data.read_bytes()).hexdigest()
    with pytest.raises(FileNotFoundError):
        digest_beside(str(tmp_path / "gone.csv")).result(timeout=60)
    assert digest_beside(str(tmp_path / "part-*.csv")) is None  # a glob: the card names the files, no digest
