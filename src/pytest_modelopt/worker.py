"""Timing one side of a comparison alone in its own process.

Two runtimes in one process distort each other: each one's thread pool (torch's OpenMP pool,
ONNX Runtime's, OpenVINO's TBB arena) stays alive and keeps the cores busy or cold for the other,
and OpenVINO measured 13% slower beside torch than alone on 2 cores. A side whose variant says how
to rebuild itself (a :class:`Loader`) is therefore timed in a worker process of its own: the
worker loads the variant from its files, and times blocks of calls on request while the other
side's process waits blocked on a pipe. The samples are the same per-call latencies, read with the
same clock, in the process that makes the calls.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import pickle
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from pytest_modelopt.allocator import keep_freed_memory
from pytest_modelopt.errors import ModeloptError

Call = Callable[[], Any]


class WorkerUnavailable(ModeloptError):
    """A worker could not start, or died while timing.

    When it cannot start the engine times that side in-process; when it dies the measurement
    fails with the reason.
    """


@dataclass(frozen=True)
class Loader:
    """How a worker process rebuilds a variant's ``run(batch)``.

    ``function`` is an importable ``"module:name"`` that takes ``kwargs`` (picklable: paths,
    settings, a picklable model) and returns the run callable. ``numpy_inputs``: the run function
    takes numpy arrays, so the batch is sent as arrays and the worker need not import torch.
    """

    function: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    numpy_inputs: bool = False

    def load(self) -> Callable[[Any], Any]:
        """Import ``function`` and call it with ``kwargs``: the variant's ``run(batch)``."""
        run: Callable[[Any], Any] = imported(self.function)(**self.kwargs)
        return run


def imported(function: str) -> Callable[..., Any]:
    """Return the function that an importable ``"module:name"`` names, importing its module."""
    module, _, name = function.partition(":")
    found: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return found


class InProcess:
    """A side timed in this process: the common case, and the fallback."""

    isolation = "in process"
    unit = "s"
    running = True  # nothing to start

    def __init__(self, call: Call, timer: Callable[[], float] = time.perf_counter) -> None:
        self.call = call
        self._timer = timer

    def start(self) -> None:
        """Do nothing: this process is already there."""
        return None

    def sample(self, calls: int) -> list[float]:
        """Time ``calls`` calls one by one; return each call's seconds."""
        call, timer, samples = self.call, self._timer, []
        for _ in range(calls):
            begin = timer()
            call()
            samples.append(timer() - begin)
        return samples

    def close(self) -> None:
        """Do nothing: there is no process to end."""
        return None


class Worker:
    """A side timed in a worker process (started by :meth:`start`, ended by :meth:`close`).

    ``fallback`` is the in-process call the engine uses instead when the worker cannot start.
    """

    isolation = "worker process"
    unit = "s"

    def __init__(
        self,
        loader: Loader,
        batch: Any,
        *,
        threads: int | None,
        fallback: Call,
        label: str = "variant",
        start_timeout_s: float = 300.0,
    ) -> None:
        self.loader = loader
        self.batch = batch
        self.threads = threads
        self.fallback = fallback
        self.label = label
        self.start_timeout_s = start_timeout_s
        self.start_seconds = 0.0
        self.allocator = ""  # how the worker's malloc handles freed memory, once started
        self._process: Any = None
        self._connection: Any = None

    @property
    def running(self) -> bool:
        """Return whether the worker process has been started and not closed."""
        return self._process is not None

    def start(self) -> None:
        """Spawn the worker and wait until it has loaded the variant; WorkerUnavailable if not."""
        if self._process is not None:
            return
        begin = time.perf_counter()
        batch = _as_numpy(self.batch) if self.loader.numpy_inputs else self.batch
        try:
            payload = pickle.dumps((self.loader, batch, self.threads))
        except Exception as error:  # anything unpicklable: a local class, a lambda, a handle
            raise WorkerUnavailable(
                f"{self.label} cannot be sent to a worker process: {type(error).__name__}: {error}"
            ) from error
        # A fresh interpreter, never a fork (thread pools do not survive one), and not
        # multiprocessing's spawn, which re-imports the user's main script.
        ours, theirs = socket.socketpair()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "pytest_modelopt.worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        theirs.close()
        self._connection = Connection(ours.detach())
        self._connection.send_bytes(payload)
        try:
            self.allocator = self._reply(self.start_timeout_s)
        except WorkerUnavailable:
            self.close()
            raise
        self.start_seconds = time.perf_counter() - begin

    def sample(self, calls: int) -> list[float]:
        """Have the worker time ``calls`` calls; return each call's seconds, read there.

        WorkerUnavailable if the worker fails or dies meanwhile.
        """
        self._connection.send(calls)
        samples: list[float] = self._reply(None)
        return samples

    def close(self) -> None:
        """End the worker process, if started (killed if it does not exit within 10 s)."""
        if self._process is None:
            return
        shut_down(self._process, self._connection, timeout_s=10)
        self._process = self._connection = None

    def _reply(self, timeout: float | None) -> Any:
        if timeout is not None and not self._connection.poll(timeout):
            raise WorkerUnavailable(f"{self.label} worker did not load within {timeout:g} s")
        try:
            status, value = self._connection.recv()
        except (EOFError, OSError) as error:
            raise WorkerUnavailable(
                f"{self.label} worker exited (code {self._process.poll()})"
            ) from error
        if status == "error":
            raise WorkerUnavailable(f"{self.label} worker failed: {value}")
        return value


def shut_down(process: subprocess.Popen[Any], connection: Connection, timeout_s: float) -> None:
    """Ask a worker to exit, wait for it (killing it past ``timeout_s``), close its pipe."""
    with contextlib.suppress(OSError, EOFError):
        connection.send(None)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    connection.close()


def _serve(connection: Connection) -> None:
    """Run the worker's loop: load, then time as many calls as asked until told to stop."""
    try:
        allocator = keep_freed_memory()  # for the worker's life: it only times
        loader, batch, threads = pickle.loads(connection.recv_bytes())
        _fix_torch_threads(threads)
        run = loader.load()
        gc.collect()
        gc.disable()
    except Exception as error:
        connection.send(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))
        return
    connection.send(("ready", allocator))
    timer = time.perf_counter
    while True:
        calls = connection.recv()
        if calls is None:
            return
        samples = []
        try:
            for _ in range(calls):
                begin = timer()
                run(batch)
                samples.append(timer() - begin)
        except Exception as error:
            connection.send(("error", f"{type(error).__name__}: {error}"))
            return
        connection.send(("samples", samples))


def _fix_torch_threads(threads: int | None) -> None:
    if threads is None:
        return
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def _as_numpy(batch: Any) -> Any:
    if isinstance(batch, tuple):
        return tuple(_as_numpy(item) for item in batch)
    return batch.numpy() if hasattr(batch, "numpy") else batch


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
