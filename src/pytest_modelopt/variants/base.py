"""Variant: a built, runnable artifact; BuildContext: what a technique's build function gets."""

from __future__ import annotations

import gzip
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modelopt.readable import one_line

if TYPE_CHECKING:
    from pytest_modelopt.hardware import Hardware
    from pytest_modelopt.registry import Technique
    from pytest_modelopt.spec import ModelSpec
    from pytest_modelopt.worker import Loader

    BuildStep = Callable[[Technique, "BuildContext", "str | None"], "tuple[Variant, str | None]"]


@dataclass
class BuildContext:
    """Everything a build function may use.

    ``model`` is a private copy of the fp32 reference model: a technique may change it in place.
    Files the variant needs go under ``workdir``; ``log`` reports progress to the user.
    ``threads`` is the harness's thread count: runtimes with their own pools use it too.
    ``cache_dir`` is a directory kept between sessions (pytest's cache), for compiler caches.
    ``technique`` is the name the technique is registered under, set by the registry (in a chain,
    the step's own name): for messages, never to be repeated as a literal. ``build_step``, where
    set, is how a chain builds each step but its last: ``build_step(technique, step_ctx,
    upstream)`` returns the step's variant and its build-cache key (None: not cached), given the
    key of the step before (None for the first, which starts from the spec's model). The
    Evaluator sets it, so that a chain's steps are restored from the build cache as whole
    techniques are.
    """

    spec: ModelSpec
    model: Any
    workdir: Path
    hardware: Hardware
    params: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    cache_dir: Path | None = None
    log: Callable[[str], None] = lambda message: None
    technique: str = ""
    build_step: BuildStep | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Restore:
    """How a later session makes a variant again from its kept files, without building it.

    ``function`` is an importable ``"module:name"`` called as ``function(ctx, **kwargs,
    **objects)`` that returns the Variant. ``ctx`` is a BuildContext whose ``workdir`` holds the
    variant's files again at the paths they had relative to it (an export shared by the spec's
    builds lies beside it). ``kwargs`` must be JSON (file names, flags); ``objects``
    are torch objects (a module whose class is code, such as a pruned graph) that the build
    cache saves with ``torch.save``, checks that they load back, and passes back.
    """

    function: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Variant:
    """A built variant of a model.

    ``run(batch)`` returns the model's output for one batch. ``files`` are what would be shipped
    (all of them count towards the size). ``details`` says how it runs (path taken, engine,
    providers) and ``notes`` what the user should know (fallbacks, deprecations). ``model`` is
    the transformed torch module where the technique yields one (pruning, low-rank, ...): the next
    technique of a chain such as ``pruned_structured+static_int8`` starts from it. ``loader``
    says how a worker process rebuilds ``run`` from the files, so that the variant can be timed
    alone in its own process (None: it is timed in this one). ``profiler`` says how to profile it
    by operator where its runtime profiles only when built to (ONNX Runtime, OpenVINO): a loader
    of ``profile(batch, calls) -> {operator: ms per call}`` (None: torch variants are profiled
    as they run, other runtimes not at all; see ``pytest_modelopt.profiling``). ``prepare``, where
    set, runs before each measurement the calls that compiled the variant, so that a compilation
    lost since the build happens there and not in a timed call; it returns notes on what it did.
    ``technique`` is the name it was built under: the registry sets it from the registration, so
    a build function leaves it out. ``restore`` says how the build cache makes it again in a
    later session (None: it is built every session); ``build_cache`` what the cache did with it.
    """

    run: Callable[[Any], Any]
    files: tuple[Path, ...]
    runtime: str
    precision: str
    device: str = "cpu"
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    build_seconds: float = 0.0
    first_call_seconds: float = 0.0
    memory: dict[str, Any] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)
    loader: Loader | None = None
    profiler: Loader | None = None
    prepare: Callable[[], list[str]] | None = field(default=None, repr=False)
    technique: str = field(default="", kw_only=True)
    restore: Restore | None = field(default=None, kw_only=True, repr=False)
    build_cache: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        """Say what went wrong when a build passes its name first, as builds used to."""
        if not callable(self.run):
            raise TypeError(
                f"Variant(run, files, runtime=..., precision=...): run must be callable, got "
                f"{self.run!r}. A build function no longer passes its technique's name first: "
                "the registry names the variant after the technique's registration."
            )

    @property
    def runtime_family(self) -> str:
        """Variants of one family share thread pools (``torch`` and ``torch.jit``, say)."""
        return self.runtime.split()[0].split(".")[0]

    def size_bytes(self) -> int:
        """Return the size of the files that would be shipped, in bytes: the variant's size."""
        return sum(path.stat().st_size for path in self.files)

    def gzip_bytes(self) -> int:
        """Size after gzip: what sparsity and weight sharing save in a compressed download."""
        total = 0
        for path in self.files:
            compressed = path.with_name(path.name + ".gz")
            with path.open("rb") as source, gzip.open(compressed, "wb", compresslevel=6) as sink:
                shutil.copyfileobj(source, sink)
            total += compressed.stat().st_size
            compressed.unlink()
        return total

    def describe(self) -> dict[str, Any]:
        """Return how the variant was built and runs, as the results file records it."""
        return {
            "technique": self.technique,
            "runtime": self.runtime,
            "precision": self.precision,
            "device": self.device,
            "files": [path.name for path in self.files],
            "details": self.details,
            "notes": [one_line(note) for note in self.notes],
            "build_seconds": round(self.build_seconds, 4),
            "build_cache": self.build_cache,
            "first_call_seconds": round(self.first_call_seconds, 6),
            "memory": self.memory,
        }


class WarningsToNotes:
    """Collect the warnings a build raises into a variant's notes instead of the user's log.

    Deprecations such as torch.jit's belong to the variant that triggered them; they are shown
    once in the summary rather than as a wall of repeated warnings.
    """

    def __init__(self) -> None:
        self.notes: list[str] = []
        self._catcher = warnings.catch_warnings(record=True)
        self._caught: list[warnings.WarningMessage] = []

    def __enter__(self) -> WarningsToNotes:
        self._caught = self._catcher.__enter__() or []
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._catcher.__exit__(*exc)
        for caught in self._caught:
            line = one_line(f"{caught.category.__name__}: {caught.message}")
            if line not in self.notes:
                self.notes.append(line)
