"""Valgrind on this machine, its options, and callgrind's client requests made from Python.

Client requests are valgrind's magic instruction sequence (no-ops on a real CPU), written into an
executable page and called through ctypes: no compiler, no C extension. x86-64 only.

``--smc-check=all`` makes valgrind re-translate code that a program writes and then runs, so the
kernels that oneDNN, OpenVINO and inductor generate at run time are counted as they are.
Valgrind emulates no AVX-512 (and no AMX): under it, runtimes that dispatch on CPUID take their
AVX2 kernels. The ISA each runtime chose is recorded with the counts, and counted baselines are
kept under a fingerprint of their own.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import shutil
import subprocess

from pytest_modelopt.errors import PackageMissing

VALGRIND_ENV = "MODELOPT_VALGRIND"


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
