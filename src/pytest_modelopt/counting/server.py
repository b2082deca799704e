"""Inside the counting worker: the variants loaded into slots, and their calls counted on request.

In order:

1. the variants are loaded and warmed up natively: callgrind starts with instrumentation off
   (``--instr-atstart=no``), so imports and JIT compilation run at valgrind's core speed;
2. instrumentation is switched on (a callgrind client request), and each side runs once more
   uncounted, so that the simulated caches are warm;
3. every counted call is bracketed by two ``CALLGRIND_TOGGLE_COLLECT`` requests (collection is
   off outside them: ``--collect-atstart=no``) and followed by a dump of its own
   (``CALLGRIND_DUMP_STATS_AT``); the instructions of an empty bracket, counted once, are
   subtracted, so a sample is the call's instructions alone.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import pickle
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pytest_modelopt.counting.counts import total_instructions
from pytest_modelopt.counting.valgrind import ClientRequests
from pytest_modelopt.worker import Loader, _fix_torch_threads


def _isa_seen() -> dict[str, str]:
    """Return what the runtimes in this process chose: torch's CPU capability, numpy's best SIMD."""
    seen: dict[str, str] = {}
    torch = sys.modules.get("torch")
    if torch is not None:
        seen["torch"] = str(torch.backends.cpu.get_cpu_capability())
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        with contextlib.suppress(Exception):
            from numpy._core._multiarray_umath import __cpu_features__ as features  # type: ignore

            best = [name for name in ("AVX512F", "AVX2", "AVX", "SSE42") if features.get(name)]
            seen["numpy"] = best[0] if best else "baseline"
    return seen


class _Served:
    """The worker's side of the protocol: slots of loaded runs, counted on request."""

    def __init__(self, connection: Connection, threads: int, directory: Path) -> None:
        self.connection = connection
        self.directory = directory
        self.requests = ClientRequests()
        self.runs: dict[int, tuple[Callable[[Any], Any], Any]] = {}
        self.next_slot = 0
        self.dumps = 0
        self.instrumented = False
        if not self.requests.running_on_valgrind():
            raise RuntimeError("not running under valgrind: counts would be meaningless")
        _fix_torch_threads(threads)

    def preload(self, modules: tuple[str, ...]) -> None:
        """Import modules ahead of a load, at valgrind's core speed."""
        self._instrument(False)
        for module in modules:
            importlib.import_module(module)

    def load(self, sides: list[tuple[Loader, Any]], warmup_calls: int) -> dict[str, Any]:
        self._instrument(False)  # loading and native warm-up at the core's speed
        gc.enable()
        runs = [(loader.load(), batch) for loader, batch in sides]
        for run, batch in runs:
            for _ in range(warmup_calls):
                run(batch)
        self._calibrate(runs)
        gc.collect()
        gc.disable()  # a collection inside a counted call would add its instructions to it
        self._instrument(True)
        for run, batch in runs:  # warm the simulated caches; collection is still off
            run(batch)
        self.requests.toggle_collect()
        self.requests.toggle_collect()
        overhead = self._dump("empty bracket")
        slots = []
        for loaded in runs:
            self.runs[self.next_slot] = loaded
            slots.append(self.next_slot)
            self.next_slot += 1
        return {"slots": slots, "overhead_dump": overhead, "isa": _isa_seen()}

    def _calibrate(self, runs: list[tuple[Callable[[Any], Any], Any]]) -> None:
        """Size the runs that are sized in instructions (the testing aid's slowdown).

        This comes before the collection and warm-up that precede counting: calibrating reads
        dump files, and the objects it leaves behind would change what the counted calls
        allocate.
        """
        for run, batch in runs:
            calibrate = getattr(run, "calibrate_with", None)
            if calibrate is not None:
                self._instrument(True)
                calibrate(self.instructions_of, batch)

    def unload(self, slots: list[int]) -> None:
        for slot in slots:
            self.runs.pop(slot, None)
        gc.collect()

    def count(self, slot: int, calls: int) -> list[int]:
        self._instrument(True)
        run, batch = self.runs[slot]
        numbers = []
        for _ in range(calls):
            self.requests.toggle_collect()
            run(batch)
            self.requests.toggle_collect()
            numbers.append(self._dump(f"slot {slot}"))
        return numbers

    def instructions_of(self, call: Callable[[], Any]) -> float:
        """Count the instructions of one ``call`` here (less an empty bracket's)."""
        counts = []
        for thunk in (call, lambda: None):
            self.requests.toggle_collect()
            thunk()
            self.requests.toggle_collect()
            path = self.directory / f"callgrind.out.{self._dump('calibration')}"
            counts.append(total_instructions(path))
            path.unlink()
        return max(0.0, counts[0] - counts[1])

    def _instrument(self, on: bool) -> None:
        if on != self.instrumented:
            (self.requests.start_instrumentation if on else self.requests.stop_instrumentation)()
            self.instrumented = on

    def _dump(self, label: str) -> int:
        self.dumps += 1
        self.requests.dump(label)
        return self.dumps


def _serve(connection: Connection, threads: int, directory: Path) -> None:
    """Answer load, count and unload requests until the parent sends None or goes away."""
    try:
        served = _Served(connection, threads, directory)
    except Exception as error:
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return
    connection.send(("ready", None))
    while True:
        try:
            message = connection.recv_bytes()
        except (EOFError, OSError):
            return
        request = pickle.loads(message)
        if request is None:
            return
        verb, *arguments = request
        try:
            connection.send(("ok", getattr(served, verb)(*arguments)))
        except Exception as error:
            connection.send(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))
