"""The instruction-counting meter: each side's calls counted under valgrind's callgrind.

Timing between two sessions drifts (speedups moved up to 20% between quiet sessions here);
instructions counted under simulation do not. Both sides of a comparison are rebuilt from their
:class:`~pytest_modelopt.worker.Loader` in one worker process that runs under callgrind, with
threads fixed to one. The engine (:class:`~pytest_modelopt.measure.Interleaver`) asks each side
for samples as it asks a timing side; a sample here is the instructions of one call.

Inside the worker, in order:

1. the variants are loaded and warmed up natively: callgrind starts with instrumentation off
   (``--instr-atstart=no``), so imports and JIT compilation run at valgrind's core speed;
2. instrumentation is switched on (a callgrind client request), and each side runs once more
   uncounted, so that the simulated caches are warm;
3. every counted call is bracketed by two ``CALLGRIND_TOGGLE_COLLECT`` requests (collection is
   off outside them: ``--collect-atstart=no``) and followed by a dump of its own
   (``CALLGRIND_DUMP_STATS_AT``); the instructions of an empty bracket, counted once, are
   subtracted, so a sample is the call's instructions alone.

Client requests are valgrind's magic instruction sequence (no-ops on a real CPU), written into an
executable page and called through ctypes: no compiler, no C extension. x86-64 only.

``--smc-check=all`` makes valgrind re-translate code that a program writes and then runs, so the
kernels that oneDNN, OpenVINO and inductor generate at run time are counted as they are.
Valgrind emulates no AVX-512 (and no AMX): under it, runtimes that dispatch on CPUID take their
AVX2 kernels. The ISA each runtime chose is recorded with the counts, and counted baselines are
kept under a fingerprint of their own.

Estimated cycles use the model of Itamar Turner-Trauring (pythonspeed.com, "consistent
benchmarking in CI"), which iai and CodSpeed's first instrument adopted: an L1 hit costs 1 cycle,
an access that misses L1 but hits the last level 5, one that goes to RAM 35::

    cycles = (Ir + Dr + Dw - L1 misses) + 5 * (L1 misses - LL misses) + 35 * LL misses
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import gc
import importlib
import mmap
import os
import pickle
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pytest_modelopt.errors import PackageMissing
from pytest_modelopt.worker import (
    Loader,
    WorkerUnavailable,
    _as_numpy,
    _fix_torch_threads,
    shut_down,
)

VALGRIND_ENV = "MODELOPT_VALGRIND"
EVENTS = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")
CYCLES_MODEL = "L1 hit 1, last-level hit 5, RAM 35 cycles (Turner-Trauring, as iai and CodSpeed)"
ISA_NOTE = (
    "valgrind emulates no AVX-512 or AMX: runtimes took their AVX2 (or older) kernels, so "
    "counts describe those kernels, not the ones this CPU runs natively"
)
TOP_FUNCTIONS = 30
VALGRIND_OPTIONS = (
    "--tool=callgrind",
    "--smc-check=all-non-file",
    "--instr-atstart=no",
    "--collect-atstart=no",
    "--cache-sim=yes",
    "--compress-strings=no",
    "--compress-pos=no",
)

# Callgrind's client requests (callgrind.h): VG_USERREQ_TOOL_BASE('C', 'T') + n.
_CALLGRIND = (ord("C") << 24) | (ord("T") << 16)
TOGGLE_COLLECT = _CALLGRIND + 2
DUMP_STATS_AT = _CALLGRIND + 3
START_INSTRUMENTATION = _CALLGRIND + 4
STOP_INSTRUMENTATION = _CALLGRIND + 5
RUNNING_ON_VALGRIND = 0x1001
# rax = &args, rdx = default; the preamble rotates rdi by 128 bits in all (a no-op), then
# xchg rbx,rbx asks valgrind to serve the request; the result comes back in rdx.
_REQUEST_CODE = bytes.fromhex("4889f84889f248c1c70348c1c70d48c1c73d48c1c7334887db4889d0c3")


class ValgrindMissing(PackageMissing):
    """The counting meter needs valgrind; it is not installed (or not usable) here."""


# -- valgrind on this machine ------------------------------------------------------------------


def find_valgrind() -> str:
    """Find valgrind: $MODELOPT_VALGRIND, else the PATH's; ValgrindMissing if there is none."""
    configured = os.environ.get(VALGRIND_ENV)
    found = shutil.which(configured or "valgrind")
    if found is None:
        where = f"${VALGRIND_ENV}={configured!r}" if configured else "valgrind on the PATH"
        raise ValgrindMissing(
            f"the instructions meter needs valgrind and found no {where}: install it "
            "(Debian/Ubuntu: apt-get install valgrind) or measure with --modelopt-measure=wall"
        )
    if platform.machine() not in {"x86_64", "AMD64"}:
        raise ValgrindMissing(
            f"the instructions meter issues callgrind requests for x86-64 only; this machine is "
            f"{platform.machine()}: measure with --modelopt-measure=wall"
        )
    return found


def valgrind_version(executable: str) -> str:
    """Return what ``valgrind --version`` prints, recorded with the counts."""
    done = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or done.stderr.strip()


# -- client requests ---------------------------------------------------------------------------


class ClientRequests:
    """Valgrind client requests from Python: the magic sequence in an executable page."""

    def __init__(self) -> None:
        self._page = mmap.mmap(
            -1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
        )
        self._page.write(_REQUEST_CODE)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        signature = ctypes.CFUNCTYPE(
            ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint64
        )
        self._function = signature(address)
        self._toggle = self._arguments(TOGGLE_COLLECT)
        self._labels: dict[str, ctypes.Array[ctypes.c_char]] = {}

    @staticmethod
    def _arguments(request: int, *values: int) -> ctypes.Array[ctypes.c_uint64]:
        return (ctypes.c_uint64 * 6)(request, *values, *([0] * (5 - len(values))))

    def request(self, request: int, *values: int) -> int:
        """Make client request ``request`` with up to five arguments; return valgrind's answer.

        Outside valgrind the magic sequence does nothing and the answer is 0.
        """
        return int(self._function(self._arguments(request, *values), 0))

    def running_on_valgrind(self) -> bool:
        """Return whether this process runs under valgrind."""
        return self.request(RUNNING_ON_VALGRIND) > 0

    def start_instrumentation(self) -> None:
        """Switch callgrind's instrumentation on: no event is collected without it."""
        self.request(START_INSTRUMENTATION)

    def stop_instrumentation(self) -> None:
        """Switch callgrind's instrumentation off: code runs faster, and nothing is collected."""
        self.request(STOP_INSTRUMENTATION)

    def toggle_collect(self) -> None:
        """Toggle callgrind's collection of events: the brackets around a counted call."""
        self._function(self._toggle, 0)

    def dump(self, label: str) -> None:
        """Have callgrind dump the counts collected so far to a file, under ``label``."""
        text = self._labels.setdefault(label, ctypes.create_string_buffer(label.encode()))
        self.request(DUMP_STATS_AT, ctypes.addressof(text))


# -- counts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """Callgrind's events of one counted stretch, and the functions that cost most (self Ir)."""

    events: dict[str, float]
    functions: dict[str, float] = field(default_factory=dict)

    @property
    def instructions(self) -> float:
        """Return the instructions executed (callgrind's ``Ir``)."""
        return self.events.get("Ir", 0.0)

    @property
    def estimated_cycles(self) -> float:
        """Return the cycles estimated from the instructions and simulated cache misses."""
        return estimated_cycles(self.events)

    def minus(self, other: Counts) -> Counts:
        """Return these counts less an overhead (the empty bracket), never below zero."""
        events = {
            name: max(0.0, value - other.events.get(name, 0.0))
            for name, value in self.events.items()
        }
        return Counts(events, self.functions)


def estimated_cycles(events: Mapping[str, float]) -> float:
    """Cycles from simulated cache behaviour (the module docstring's model)."""
    accesses = events.get("Ir", 0.0) + events.get("Dr", 0.0) + events.get("Dw", 0.0)
    l1_misses = events.get("I1mr", 0.0) + events.get("D1mr", 0.0) + events.get("D1mw", 0.0)
    ll_misses = events.get("ILmr", 0.0) + events.get("DLmr", 0.0) + events.get("DLmw", 0.0)
    return (accesses - l1_misses) + 5 * (l1_misses - ll_misses) + 35 * ll_misses


def parse_callgrind(path: Path, top: int = TOP_FUNCTIONS) -> Counts:
    """Read the totals of a callgrind dump and its ``top`` functions by self instructions.

    A cost line follows a ``fn=`` line (self cost) or a ``calls=`` line (the inclusive cost of
    that call, which is not the caller's own and is skipped).
    """
    names: list[str] = []
    totals: list[float] | None = None
    self_ir: dict[str, float] = {}
    function = ""
    binary = ""
    after_call = False
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("events:"):
                names = line.split()[1:]
            elif line.startswith("totals:") or (line.startswith("summary:") and totals is None):
                totals = [float(value) for value in line.split()[1:]]
            elif line.startswith("ob="):
                binary = Path(line[3:].strip()).name
            elif line.startswith("fn="):
                function = line[3:].strip()
                # A stripped library's functions are bare addresses: say whose they are.
                if function.startswith("0x") and binary:
                    function = f"{function} in {binary}"
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                    continue
                costs = line.split()[1:]
                if costs and function:
                    self_ir[function] = self_ir.get(function, 0.0) + float(costs[0])
    if totals is None or not names:
        raise WorkerUnavailable(f"callgrind dump {path} has no totals: valgrind failed to write it")
    events = {
        name: totals[index] if index < len(totals) else 0.0 for index, name in enumerate(names)
    }
    ranked = sorted(self_ir.items(), key=lambda item: -item[1])[:top]
    return Counts(events, dict(ranked))


def per_call(counts: list[Counts]) -> dict[str, Any]:
    """Summarize counted calls: per-call medians, estimated cycles, the last call's top functions.

    Medians of events are robust to a call that an allocator's trim or a lazy cache made dearer.
    """
    if not counts:
        return {}
    events = {name: statistics.median(c.events.get(name, 0.0) for c in counts) for name in EVENTS}
    return {
        "instructions": events["Ir"],
        "estimated_cycles": estimated_cycles(events),
        "events": events,
        "calls": len(counts),
        "top_functions": counts[-1].functions,
    }


# -- the worker under valgrind -----------------------------------------------------------------


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


class CountedPair:
    """A comparison's two sides in a counting worker.

    Loaded by the first side that starts, unloaded when the last one closes.
    """

    def __init__(self, worker: CountingWorker, sides: list[tuple[Loader, Any]], label: str):
        self.worker = worker
        self.sides = sides
        self.label = label
        self.slots: list[int] = []
        self.load_seconds = 0.0
        self._users = 0

    def acquire(self) -> None:
        """Count a side in as a user, loading the pair into the worker for the first one."""
        if not self.slots:
            begin = time.perf_counter()
            self.slots = self.worker.load(self.sides, label=self.label)
            self.load_seconds = time.perf_counter() - begin
        self._users += 1

    def release(self) -> None:
        """Count a side out; unload the pair when the last one is gone."""
        self._users -= 1
        if self._users <= 0 and self.slots:
            slots, self.slots, self._users = self.slots, [], 0
            with contextlib.suppress(WorkerUnavailable):
                self.worker.unload(slots)


class CountedSide:
    """A meter: one side of a comparison counted in a :class:`CountingWorker` slot.

    ``sample(calls)`` returns instructions per call; the full counts are kept for the report.
    """

    unit = "instructions"
    isolation = "worker process under valgrind (callgrind)"
    # Counts do not see page faults: the counting worker keeps glibc's defaults, so that counted
    # baselines stay comparable (pytest_modelopt.allocator is for wall-clock timing).
    allocator = "system default"
    fallback: Callable[[], Any] | None = None

    def __init__(self, pair: CountedPair, index: int, label: str) -> None:
        self.pair = pair
        self.index = index
        self.label = label
        self.counts: list[Counts] = []
        self.seconds: list[float] = []  # wall time of each counted call, under valgrind
        self._started = False

    @property
    def worker(self) -> CountingWorker:
        """Return the counting worker the side is loaded in."""
        return self.pair.worker

    @property
    def running(self) -> bool:
        """Return whether the side has been started and not closed."""
        return self._started

    def start(self) -> None:
        """Load the pair into the worker, if this is the first side to start."""
        if not self._started:
            self.pair.acquire()
            self._started = True

    def sample(self, calls: int) -> list[float]:
        """Count ``calls`` calls; return the instructions of each, keeping the full counts."""
        begin = time.perf_counter()
        counted = self.worker.count(self.pair.slots[self.index], calls, label=self.label)
        self.seconds += [(time.perf_counter() - begin) / max(calls, 1)] * calls
        self.counts += counted
        return [c.instructions for c in counted]

    def close(self) -> None:
        """Release the pair; the last side to close unloads it."""
        if self._started:
            self._started = False
            self.pair.release()

    def report(self, skip: int) -> dict[str, Any]:
        """Per-call medians of the counts after the first ``skip`` (engine warm-up calls)."""
        kept = self.counts[skip:] or self.counts
        return {
            **per_call(kept),
            "isa": self.worker.isa,
            "isa_note": ISA_NOTE,
            "cycles_model": CYCLES_MODEL,
            "valgrind": self.worker.valgrind,
            "valgrind_options": " ".join(VALGRIND_OPTIONS),
            "worker_start_seconds": self.worker.start_seconds,
            "load_seconds": self.pair.load_seconds,
            "seconds_per_call": statistics.median(self.seconds) if self.seconds else None,
            "worker_pid": self.worker.pid,
        }


def counted_sides(
    variant: tuple[Loader, Any],
    reference: tuple[Loader, Any],
    *,
    threads: int | None,
    label: str,
    worker: CountingWorker | None = None,
) -> tuple[CountedSide, CountedSide]:
    """Return the variant's and the reference's meters, loaded together into a counting worker.

    The worker is the session's shared one unless given; each side is rebuilt with one thread
    where its loader takes a thread count.
    """
    sides = [(single_threaded(loader), batch) for loader, batch in (variant, reference)]
    pair = CountedPair(worker or shared_worker(threads), sides, label)
    return CountedSide(pair, 0, f"{label} variant"), CountedSide(pair, 1, f"{label} reference")


def single_threaded(loader: Loader) -> Loader:
    """Return the loader with its runtime's own pool at one thread.

    ONNX Runtime's ``threads``, OpenVINO's ``INFERENCE_NUM_THREADS``: valgrind runs threads one
    at a time, and a pool's spinning would add instructions that differ from one process to the
    next.
    """
    kwargs = dict(loader.kwargs)
    if "threads" in kwargs:
        kwargs["threads"] = 1
    config = kwargs.get("config")
    if isinstance(config, dict) and "INFERENCE_NUM_THREADS" in config:
        kwargs["config"] = {**config, "INFERENCE_NUM_THREADS": 1}
    return dataclasses.replace(loader, kwargs=kwargs)


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


# -- inside the worker -------------------------------------------------------------------------


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
            counts.append(parse_callgrind(path, top=0).instructions)
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


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])), int(sys.argv[2]), Path(sys.argv[3]))
