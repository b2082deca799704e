"""The counting worker, from this side: one process under callgrind, kept for the session.

The process runs ``python -m pytest_modelopt.counting`` (``server``) under valgrind with the
options of ``valgrind``, a fixed environment and no address randomization; requests and
answers are pickles over a socket pair, and each counted call's dump is read into ``Counts``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pytest_modelopt.counting.counts import Counts, parse_callgrind
from pytest_modelopt.counting.valgrind import VALGRIND_OPTIONS, find_valgrind, valgrind_version
from pytest_modelopt.worker import Loader, WorkerUnavailable, _as_numpy, shut_down


class CountingWorker:
    """One process under callgrind, kept for the session, into which comparisons load their sides.

    Starting it (valgrind, then importing the runtimes at valgrind's core speed) costs a minute or
    more; loading a pair costs its unpickling and warm-up. So the process outlives a comparison:
    :func:`shared_worker` keeps one per thread count until :func:`close_shared_workers`. Each
    :meth:`load` switches instrumentation off, rebuilds the sides and warms them up
    (``warmup_calls`` native calls each), switches it on again, runs each side once uncounted (warm
    simulated caches) and counts an empty bracket, the overhead that is subtracted from its calls.
    """

    def __init__(self, *, threads: int | None, start_timeout_s: float = 1800.0) -> None:
        self.threads = threads
        self.start_timeout_s = start_timeout_s
        self.start_seconds = 0.0
        self.isa: dict[str, str] = {}
        self.valgrind = ""
        self._process: Any = None
        self._connection: Any = None
        self._directory: Path | None = None
        self._overheads: dict[int, Counts] = {}
        self._unanswered = 0  # requests sent without waiting (preloads)

    @property
    def running(self) -> bool:
        """Return whether the worker process is started and has not exited."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """Return the process id of valgrind running the worker, or None before it starts."""
        return self._process.pid if self._process is not None else None

    def start(self, preload: tuple[str, ...] = ()) -> None:
        """Start the process if it is not running, and have it import ``preload`` modules.

        The modules (the runtimes a comparison will need) are imported without waiting, so that
        their import under valgrind overlaps the variant's build in this process.
        """
        if not self.running:
            self._start()
        if preload:
            self._connection.send_bytes(pickle.dumps(("preload", preload)))
            self._unanswered += 1

    def _start(self) -> None:
        self.close()  # a worker that died: its files and pipe go before a new one starts
        executable = find_valgrind()
        begin = time.perf_counter()
        self._directory = Path(tempfile.mkdtemp(prefix="modelopt-callgrind-"))
        ours, theirs = socket.socketpair()
        command = [
            executable,
            *VALGRIND_OPTIONS,
            f"--callgrind-out-file={self._directory / 'callgrind.out'}",
            f"--log-file={self._directory / 'valgrind.log'}",
            sys.executable,
            "-m",
            "pytest_modelopt.counting",
            str(theirs.fileno()),
            str(self.threads or 1),
            str(self._directory),
        ]
        self._process = subprocess.Popen(
            command,
            pass_fds=(theirs.fileno(),),
            env=_worker_environment(self.threads),
            preexec_fn=_no_address_randomization,
        )
        theirs.close()
        self._connection = Connection(ours.detach())
        self._unanswered = 0
        try:
            self._reply("counting worker", self.start_timeout_s)
        except WorkerUnavailable:
            self.close()
            raise
        self.valgrind = valgrind_version(executable)
        self.start_seconds = time.perf_counter() - begin

    def load(
        self, sides: list[tuple[Loader, Any]], *, label: str, warmup_calls: int = 3
    ) -> list[int]:
        """Rebuild and warm up ``sides`` in the worker; their slots, for :meth:`count`."""
        self.start()
        batches = [
            (loader, _as_numpy(batch) if loader.numpy_inputs else batch) for loader, batch in sides
        ]
        try:
            payload = pickle.dumps(("load", batches, warmup_calls))
        except Exception as error:  # a local class, a lambda, a handle
            raise WorkerUnavailable(
                f"{label} cannot be sent to a counting worker: {type(error).__name__}: {error}"
            ) from error
        self._connection.send_bytes(payload)
        loaded = self._reply(label, self.start_timeout_s)
        self.isa = loaded["isa"]
        overhead = parse_callgrind(self._dump_path(loaded["overhead_dump"]))
        for slot in loaded["slots"]:
            self._overheads[slot] = overhead
        return list(loaded["slots"])

    def unload(self, slots: list[int]) -> None:
        """Free the slots' variants in the worker (the process stays for the next comparison)."""
        if self.running:
            self._connection.send_bytes(pickle.dumps(("unload", slots)))
            self._reply("counting worker", 600.0)
        for slot in slots:
            self._overheads.pop(slot, None)

    def count(self, slot: int, calls: int, *, label: str) -> list[Counts]:
        """Count ``calls`` calls of one side; their counts, each less the empty bracket's."""
        self._connection.send_bytes(pickle.dumps(("count", slot, calls)))
        dumps: list[int] = self._reply(label, None)
        counted = []
        for number in dumps:
            path = self._dump_path(number)
            counted.append(parse_callgrind(path).minus(self._overheads[slot]))
            path.unlink()
        return counted

    def close(self) -> None:
        """End the worker process and remove its dump files; a later load starts a new one."""
        if self._process is not None:
            shut_down(self._process, self._connection, timeout_s=60)  # valgrind exits slowly
        self._process = self._connection = None
        self._overheads.clear()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def _dump_path(self, number: int) -> Path:
        assert self._directory is not None
        return self._directory / f"callgrind.out.{number}"

    def _reply(self, label: str, timeout: float | None) -> Any:
        """Return the answer to the last request, after those of earlier unanswered requests.

        A failed preload is not an error here: the load that needs the module says why.
        """
        while self._unanswered:
            self._unanswered -= 1
            with contextlib.suppress(WorkerUnavailable):
                self._answer(label, timeout)
        return self._answer(label, timeout)

    def _answer(self, label: str, timeout: float | None) -> Any:
        if timeout is not None and not self._connection.poll(timeout):
            raise WorkerUnavailable(f"{label}: the counting worker did not answer in {timeout:g} s")
        try:
            status, value = self._connection.recv()
        except (EOFError, OSError) as error:
            log = self._log_tail()
            code = self._process.poll()
            self.close()
            raise WorkerUnavailable(
                f"{label}: the counting worker exited (code {code}){log}"
            ) from error
        if status == "error":
            raise WorkerUnavailable(f"{label}: the counting worker failed: {value}")
        return value

    def _log_tail(self) -> str:
        log = self._directory / "valgrind.log" if self._directory else None
        if log is None or not log.exists():
            return ""
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        return "; valgrind said: " + " | ".join(tail) if tail else ""


_shared: dict[int, CountingWorker] = {}


def shared_worker(threads: int | None) -> CountingWorker:
    """Return the session's counting worker for this thread count (started on first load)."""
    return _shared.setdefault(threads or 1, CountingWorker(threads=threads))


@atexit.register
def close_shared_workers() -> None:
    """End every shared counting worker (the plugin calls this when the session ends)."""
    for worker in _shared.values():
        worker.close()
    _shared.clear()


def _no_address_randomization() -> None:
    """Turn off address-space randomization in the child, before exec.

    personality(ADDR_NO_RANDOMIZE), so that hash tables keyed by addresses probe alike in every
    process. Best effort: where the call is refused, counts vary a little more.
    """
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        current = libc.personality(0xFFFFFFFF)
        if current != -1:
            libc.personality(current | 0x0040000)


def _worker_environment(threads: int | None) -> dict[str, str]:
    """Return the worker's environment: what changes counts between processes is fixed.

    The parent's environment, its import path, one thread (or the fixed count) for every
    runtime's pool, and a fixed hash seed.
    """
    count = str(threads or 1)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": count,
        "MKL_NUM_THREADS": count,
        "OPENBLAS_NUM_THREADS": count,
    }
