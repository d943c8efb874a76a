"""The processes `invoke train` runs beside its own, so that two cores share the work (Linux, fork).

    main process   config → start TorchProcess → import pandas/scikit-learn, read the data → start FitWorker
                   → import MLflow, open the store, start the run → log metrics and the model → log the plots → register
    TorchProcess   import PyTorch (while the main process imports pandas and scikit-learn) → train the network
    FitWorker      fit the preprocessing → hand the network to TorchProcess → metrics → plots

Importing PyTorch, MLflow, pandas and scikit-learn takes several times longer than fitting the
default model (bench/train_bench.py): each process imports only what it uses, while the others
work. Where fork is not the safe default, or TAND_INLINE_FIT=1 is set (to step through your
preprocess hook in a debugger, or to profile), all of it runs inline in the main process.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import traceback

from tand.errors import TandError


def forking() -> bool:
    return sys.platform == "linux" and os.environ.get("TAND_INLINE_FIT", "") in ("", "0")


class ProcessDied(TandError):
    pass


class _PipeClosed(Exception):
    """The process at the other end of a pipe exited without answering."""


def _receive(connection, who: str):
    try:
        status, payload = connection.recv()
    except (EOFError, ConnectionResetError):
        raise _PipeClosed from None
    if status == "error":
        raise payload
    if status == "crash":
        raise RuntimeError(f"training failed in {who}:\n{payload}")
    return payload


def _reply(connection, work):
    """Send ("ok", work()) and return work()'s result, or send the failure (a known one as itself,
    anything else as its traceback) and return None."""
    try:
        result = work()
        connection.send(("ok", result))  # inside the try: a result that cannot be pickled is a crash too
        return result
    except TandError as exc:
        connection.send(("error", exc))
    except BaseException:
        connection.send(("crash", traceback.format_exc()))
    return None


class TorchProcess:
    """A process that imports PyTorch as soon as it starts, then trains one network when called.

    Calling it is calling tand.models.network.fit_network there (same arguments, same result), so it
    is what the MLP estimator takes as its `network_runner`. `meanwhile` runs in the caller between
    sending the job and receiving the weights: time to import what comes next."""

    def __init__(self, meanwhile=None):
        self.meanwhile = meanwhile
        context = multiprocessing.get_context("fork")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=self._main, args=(child,), daemon=True, name="tand-torch")
        self._process.start()
        child.close()

    @staticmethod
    def _main(connection) -> None:
        try:
            import torch  # noqa: F401 - the point of this process: the import starts now
            import tqdm.auto  # noqa: F401
        except Exception:  # noqa: BLE001 - fit_network imports it again and reports it, as it would inline
            pass
        from tand.models.network import fit_network

        try:
            args = connection.recv()
        except EOFError:  # nobody asked: the run stopped before fitting
            return
        _reply(connection, lambda: fit_network(*args))
        connection.close()

    def __call__(self, *args):
        try:
            self._connection.send(args)
        except (BrokenPipeError, ConnectionResetError):
            raise ProcessDied("the PyTorch training process died before it was asked to train; out of memory?") from None
        if self.meanwhile is not None:
            self.meanwhile()
        try:
            return _receive(self._connection, "the PyTorch training process")
        except _PipeClosed:
            raise ProcessDied("the PyTorch training process died while training; out of memory?") from None

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._connection.close()


class FitWorker:
    """Fitting, metrics and plots in a forked child, or inline (`fork=False`).

    The child sends the fitted pipeline and its metrics as soon as they exist, then renders the
    plots while the main process logs the model."""

    def __init__(self, pipeline, parts, schema, network_runner=None, fork: bool = True):
        self._args = (pipeline, parts, schema, network_runner)
        self._process = None
        self._evaluation = None
        if fork:
            context = multiprocessing.get_context("fork")
            self._reader, writer = context.Pipe(duplex=False)
            self._process = context.Process(target=self._main, args=(writer, *self._args), daemon=True, name="tand-fit")
            self._process.start()
            writer.close()

    @staticmethod
    def _main(writer, pipeline, parts, schema, network_runner) -> None:
        from tand import fitting

        try:
            evaluation = _reply(writer, lambda: fitting.fit_and_evaluate(pipeline, parts, schema, network_runner))
            if evaluation is not None:
                _reply(writer, lambda: _timed_plots(parts, evaluation, schema))
        finally:
            writer.close()

    def _receive(self):
        try:
            return _receive(self._reader, "the training process")
        except _PipeClosed:  # this worker itself (a ProcessDied it forwards names the PyTorch process)
            self._process.join()
            raise ProcessDied(f"the training process died (exit code {self._process.exitcode}); out of memory?") from None

    def evaluation(self):
        """The fitted pipeline and its metrics (tand.fitting.Evaluation); inline, this is where it fits."""
        if self._process is None:
            from tand import fitting

            self._evaluation = fitting.fit_and_evaluate(*self._args)
            return self._evaluation
        return self._receive()

    def plots(self) -> tuple[dict[str, bytes], float]:
        """(PNG bytes by file name, seconds spent rendering)."""
        if self._process is None:
            _, parts, schema, _ = self._args
            return _timed_plots(parts, self._evaluation, schema)
        plots = self._receive()
        self._process.join()
        return plots

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._reader.close()


def _timed_plots(parts, evaluation, schema) -> tuple[dict[str, bytes], float]:
    from tand import fitting

    started = time.perf_counter()
    return fitting.render_plots(parts, evaluation.predictions, schema), time.perf_counter() - started
