"""The processes `invoke train` runs beside its own, so that two cores share the work (Linux, fork).

    main process   config → start TorchProcess → import pandas/scikit-learn, read the data → start FitWorker
                   → import MLflow, open the store (at_low_priority: beside the fit's threads) → start the run
                   → log metrics and the model, build the model card → log the plots → register
    TorchProcess   import PyTorch (while the main process imports pandas and scikit-learn) → train the network
    FitWorker      fit the preprocessing → hand the network to TorchProcess → metrics → plots

Why: importing PyTorch, MLflow, pandas and scikit-learn takes several times longer than fitting the
default model, so each process imports only what it uses while the others work. Measured by
bench/train_bench.py (default PyTorch config, fresh store, two cores, medians of 5): 4.81 s with these
processes against 7.99 s all in one process, a ratio of 0.60 (and 3.38 s against 4.58 s before and
after the last round of changes). Re-measure before changing the cut.

Only `invoke train` uses them (`tand.training.run.train(..., processes=True)`, Linux only); a
library call, a notebook and a debugger get everything inline by default, in the caller's process.
A child never outlives the main process: it asks the kernel for SIGKILL when its parent dies
(PR_SET_PDEATHSIG) and closes the parent's ends of its pipes, so it sees end-of-file instead of
blocking on a pipe nobody reads.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import sys
import time
import traceback
from concurrent.futures import Future, wait

from tand.errors import TandError


def available() -> bool:
    """Fork is the safe default only on Linux."""
    return sys.platform == "linux"


def _die_with_parent(*parent_ends) -> None:
    """In a child right after fork: close the parent's pipe ends it inherited, and be killed when the
    parent dies (even by SIGKILL), so no child is left blocked on a pipe nobody reads."""
    for end in parent_ends:
        end.close()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not glibc: the pipe's end-of-file still ends the child
        return
    if os.getppid() == 1:  # the parent died before prctl: nobody will ask for the answer
        os._exit(1)


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
    except OSError as exc:  # a full disk arrives as itself, so the main process names it in one line
        connection.send(("error", exc) if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ("crash", traceback.format_exc()))
    except BaseException:
        connection.send(("crash", traceback.format_exc()))
    return None


class TorchProcess:
    """A process that imports PyTorch as soon as it starts, then trains a network each time it is called.

    Calling it is calling tand.models.network.fit_network there (same arguments, same result), so it
    is what tand.models.network.trained_by takes as the MLP's runner. `meanwhile` runs in the caller between
    sending the job and receiving the weights: time to import what comes next."""

    def __init__(self, meanwhile=None):
        self.meanwhile = meanwhile
        context = multiprocessing.get_context("fork")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=self._main, args=(child, self._connection), daemon=True, name="tand-torch")
        self._process.start()
        child.close()

    @staticmethod
    def _main(connection, parent_end) -> None:
        _die_with_parent(parent_end)
        try:
            import torch  # noqa: F401 - the point of this process: the import starts now
            import tqdm.auto  # noqa: F401
        except Exception:  # noqa: BLE001 - fit_network imports it again and reports it, as it would inline
            pass
        from tand.models.network import fit_network

        while True:  # the fit, then any refits (a binary threshold's out-of-fold fits), until the caller closes
            try:
                args = connection.recv()
            except EOFError:  # nobody asks any more (or never asked: the run stopped before fitting)
                break
            _reply(connection, lambda: fit_network(*args))
        connection.close()

    def __call__(self, *args):
        try:
            self._connection.send(args)
        except (BrokenPipeError, ConnectionResetError):
            raise ProcessDied("the PyTorch training process died before it was asked to train; out of memory?") from None
        if self.meanwhile is not None:
            self.meanwhile, meanwhile = None, self.meanwhile  # once, while the first network trains
            meanwhile()
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

    def __init__(self, pipeline, parts, schema, network_runner=None, fork: bool = True, threshold="auto", cv_folds: int = 3):
        self._args = (pipeline, parts, schema, network_runner, threshold, cv_folds)
        self._process = None
        self._evaluation = None
        if fork:
            from tand.training.memory import release_free_memory

            release_free_memory()  # the child starts with this process's resident pages: none that are free
            context = multiprocessing.get_context("fork")
            self._reader, writer = context.Pipe(duplex=False)
            self._process = context.Process(
                target=self._main, args=(writer, self._reader, *self._args), daemon=True, name="tand-fit"
            )
            self._process.start()
            writer.close()

    @staticmethod
    def _main(writer, parent_end, pipeline, parts, schema, network_runner, threshold, cv_folds) -> None:
        _die_with_parent(parent_end)
        from tand.training import fitting

        try:
            evaluation = _reply(
                writer, lambda: fitting.fit_and_evaluate(pipeline, parts, schema, network_runner, threshold, cv_folds)
            )
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

    @property
    def forked(self) -> bool:
        """Whether the fit runs in a child process, beside this one."""
        return self._process is not None

    def evaluation(self):
        """The fitted pipeline and its metrics (tand.training.fitting.Evaluation); inline, this is where it fits."""
        if self._process is None:
            from tand.training import fitting

            self._evaluation = fitting.fit_and_evaluate(*self._args)
            return self._evaluation
        return self._receive()

    def plots(self) -> tuple[dict[str, bytes], float]:
        """(PNG bytes by file name, seconds spent rendering)."""
        if self._process is None:
            _, parts, schema, *_ = self._args
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


def in_thread(function, *args, lowest_priority: bool = False) -> Future:
    """function(*args) started now in a daemon thread of its own; its result, or its exception, in the Future.
    `lowest_priority`: the thread runs at nice 19 (that thread only, on Linux; it ends with the call)."""
    import threading

    future: Future = Future()

    def run() -> None:
        if lowest_priority and hasattr(os, "setpriority"):
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
            except OSError:  # not allowed here: the work still runs, at the usual priority
                pass
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # noqa: BLE001 - raised again by future.result(), wherever it is waited for
            future.set_exception(exc)

    threading.Thread(target=run, name=f"tand-{getattr(function, '__name__', 'call')}", daemon=True).start()
    return future


def at_low_priority(function, *args):
    """function(*args) in a thread of its own at the lowest CPU priority (in_thread), while this thread waits:
    its result, or its exception raised here.

    For the main process's work while a forked worker fits: the libraries' OpenMP threads spin while they wait
    for each other, and a process running beside them on one of two cores stalls them. Measured here, a
    LightGBM fit of 800k rows on two threads: 5.2 s alone, 17.9 s beside a busy Python loop, 5.1 s beside the
    same loop at nice 19. At the lowest priority the main process's work (importing MLflow, opening the store:
    2-3 s) takes what the fit leaves, and a core that nothing else wants at full speed. Threads started inside
    the call keep its priority (MLflow's telemetry thread, when telemetry is on); a store write it makes holds
    its lock as long as the fit keeps it waiting. Interrupted (Ctrl-C), this thread lets the call finish (the
    fit's processes die with the same signal) for up to INTERRUPTED_WAIT seconds before passing it on."""
    future = in_thread(function, *args, lowest_priority=True)
    try:
        return future.result()
    except KeyboardInterrupt:  # no store left half set up (a new store file, an experiment) if it can be helped
        wait([future], INTERRUPTED_WAIT)
        raise


LOWEST_PRIORITY = 19
INTERRUPTED_WAIT = 10.0


def _timed_plots(parts, evaluation, schema) -> tuple[dict[str, bytes], float]:
    from tand.training import fitting

    started = time.perf_counter()
    # The schema fitting returned names the positive class (the plots' ROC and PR curves are drawn for it).
    plots = fitting.render_plots(parts, evaluation.predictions, evaluation.schema or schema, evaluation.pipeline)
    return plots, time.perf_counter() - started
