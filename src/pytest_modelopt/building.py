"""Building a spec's variants: once per technique and parameters, or restored from the cache.

A :class:`Builder` makes each variant of one spec once, on a private copy of the reference model,
times the build and its first call, and keeps what it built in the build cache
(:mod:`pytest_modelopt.buildcache`) for later sessions, restoring instead of building when an
entry matches. The :class:`~pytest_modelopt.evaluation.Evaluator` measures what it builds.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pytest_modelopt.buildcache import BuildCache, Unhashable, build_key, spec_digest
from pytest_modelopt.errors import BuildError, ModeloptError, NotApplicable
from pytest_modelopt.hardware import Hardware
from pytest_modelopt.memory import PeakMemory
from pytest_modelopt.reference import REFERENCE
from pytest_modelopt.registry import Technique, get_technique
from pytest_modelopt.spec import ModelSpec
from pytest_modelopt.variants.base import BuildContext, Variant


class Builder:
    """Builds the variants of one spec, each once; the build cache keeps them between sessions.

    ``cache_dir`` is kept between sessions (pytest's cache): compilers' caches and, unless
    ``reuse_builds`` is off, the build cache live there.
    """

    def __init__(
        self,
        spec: ModelSpec,
        hardware: Hardware,
        workdir: Path,
        *,
        threads: int | None,
        cache_dir: Path | None = None,
        reuse_builds: bool = True,
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.spec = spec
        self.hardware = hardware
        self.workdir = workdir
        self.threads = threads
        self.cache_dir = cache_dir
        self.log = log
        self.cache = (
            BuildCache(cache_dir / "builds", log=log) if cache_dir and reuse_builds else None
        )
        self.variants: dict[str, Variant] = {}
        self._spec_hash: str | None = None  # "" once it is known that the spec cannot be hashed

    def build(self, technique_name: str, params: Mapping[str, Any] | None = None) -> Variant:
        """Build a variant, once per technique and parameters.

        Raises RequirementMissing if it cannot run here, ParameterError for a parameter the
        technique does not take.
        """
        technique = get_technique(technique_name)
        merged = technique.resolve_params(params)
        key = f"{technique_name} {sorted(merged.items())!r}" if params else technique_name
        if key not in self.variants:
            self._check_applicable(technique)
            # One directory per technique and parameters: a second build with other parameters
            # must not overwrite the files (size, worker reload) of the first.
            suffix = f"-{hashlib.sha256(key.encode()).hexdigest()[:8]}" if params else ""
            workdir = self.workdir / _safe(technique_name + suffix)
            workdir.mkdir(parents=True, exist_ok=True)
            self.variants[key] = self._restored_or_built(technique, merged, workdir)
        return self.variants[key]

    def _check_applicable(self, technique: Technique) -> None:
        """Raise why ``technique`` cannot build here: a requirement, or the model's framework."""
        missing = technique.unmet(self.hardware)
        if missing is not None:
            raise missing
        framework = self.spec.framework
        if framework not in technique.frameworks:
            raise NotApplicable(
                f"{technique.name}: applies to {'/'.join(technique.frameworks)} models; "
                f"{self.spec.name} is a {framework} model"
            )

    def _restored_or_built(
        self, technique: Technique, params: dict[str, Any], workdir: Path
    ) -> Variant:
        """Restore the variant from the build cache, else build it (and keep it); log which."""
        context = BuildContext(
            spec=self.spec,
            model=copy.deepcopy(self.spec.load()),
            workdir=workdir,
            hardware=self.hardware,
            params=params,
            threads=self.threads,
            cache_dir=self.cache_dir,
            log=self.log,
            build_step=self._build_step if self.cache else None,
        )
        label = f"{self.spec.name}[{technique.name}]"
        cache_key = self._cache_key(technique, params)
        # A chain's variant is its last step's, built (and restored) in that step's directory.
        last_step = workdir / technique.components[-1] if technique.components else workdir
        last_step.mkdir(exist_ok=True)
        restore_context = dataclasses.replace(context, workdir=last_step)
        variant = self._restored(cache_key, restore_context, technique.name, label)
        if variant is None:
            variant = self._built(technique, context, label)
        try:
            self._first_call(variant)
        except Exception as error:  # a variant that builds but cannot run is that build's failure
            raise BuildError(
                f"{technique.name} built a variant of {self.spec.name} that fails on the example "
                f"input: {type(error).__name__}: {error}"
            ) from error
        if cache_key is not None and self.cache is not None and not variant.build_cache:
            variant.build_cache = self.cache.keep(*cache_key, variant, last_step, self.workdir)
        if variant.build_cache.startswith("reused"):
            self.log(f"{label}: reused from the build cache in {variant.build_seconds:.1f} s")
        else:
            kept = " (kept in the build cache)" if variant.build_cache.startswith("kept") else ""
            self.log(f"{label}: built in {variant.build_seconds:.1f} s{kept}")
        return variant

    def _built(self, technique: Technique, context: BuildContext, label: str) -> Variant:
        """Build the variant, timing the build and its peak memory."""
        self.log(f"{label}: building")
        start = time.perf_counter()
        try:
            with PeakMemory() as build_memory:
                variant = technique.build_variant(context)
        except ModeloptError:
            raise
        except Exception as error:
            raise BuildError(
                f"{technique.name} failed on {self.spec.name}: {type(error).__name__}: {error}"
            ) from error
        variant.build_seconds = time.perf_counter() - start
        variant.memory["build_peak_mb"] = build_memory.host_mb
        return variant

    def _restored(
        self,
        cache_key: tuple[str, dict[str, Any]] | None,
        context: BuildContext,
        technique_name: str,
        label: str,
    ) -> Variant | None:
        """Return the variant the build cache keeps under ``cache_key``, or None.

        ``build_seconds`` is then the time it took to restore it (the original build's time is
        in ``build_cache``).
        """
        if cache_key is None or self.cache is None:
            return None
        start = time.perf_counter()
        context = dataclasses.replace(context, technique=technique_name)
        variant = self.cache.restore(cache_key[0], context, self.workdir, label)
        if variant is not None:
            variant.technique = technique_name
            variant.build_seconds = time.perf_counter() - start
        return variant

    def _build_step(
        self, technique: Technique, context: BuildContext, upstream: str | None
    ) -> tuple[Variant, str | None]:
        """Build one step of a chain, or restore it; return it and its key (see BuildContext).

        The first step is keyed as the technique alone on the spec, so that a chain starts from
        the entry the technique's own test kept; a later one on the key of the step before.
        """
        assert self.cache is not None
        cache_key = self._cache_key(technique, context.params, upstream)
        label = f"{self.spec.name}[{technique.name}]"
        variant = self._restored(cache_key, context, technique.name, label)
        if variant is not None:
            self.log(f"{label}: reused from the build cache in {variant.build_seconds:.1f} s")
        else:
            variant = technique.build_variant(context)
            if cache_key is not None:
                variant.build_cache = self.cache.keep(
                    *cache_key, variant, context.workdir, self.workdir
                )
        kept = cache_key is not None and not variant.build_cache.startswith("not kept")
        return variant, cache_key[0] if cache_key is not None and kept else None

    def _cache_key(
        self, technique: Technique, params: Mapping[str, Any], upstream: str | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        """Return the build's cache key and what it is made of; None when nothing is cached.

        ``upstream`` is the key of the chain step the build starts from (None: the spec's
        model). The reference is not cached: it is the spec's own model.
        """
        if self.cache is None or technique.name == REFERENCE:
            return None
        source = upstream or self._spec_key()
        if not source:
            return None
        return build_key(
            source,
            technique,
            params,
            fingerprint=self.hardware.fingerprint,
            threads=self.threads,
        )

    def _spec_key(self) -> str:
        """Return the spec's digest, once; "" (logged once) when the spec cannot be hashed."""
        if self._spec_hash is None:
            try:
                self._spec_hash = spec_digest(self.spec)
            except Unhashable as error:
                self._spec_hash = ""
                self.log(f"{self.spec.name}: builds are not cached: {error}")
        return self._spec_hash

    def _first_call(self, variant: Variant) -> None:
        """Time the variant's very first call (lazy initialization, JIT) and its peak memory."""
        gpu = variant.device.startswith("cuda")
        with PeakMemory(gpu=gpu) as run_memory:
            start = time.perf_counter()
            variant.run(self.spec.example_input)
            if gpu:
                sys.modules["torch"].cuda.synchronize()
            variant.first_call_seconds = time.perf_counter() - start
        variant.memory["run_peak_mb"] = run_memory.host_mb
        variant.memory["memory_method"] = run_memory.method
        if run_memory.gpu_mb is not None:
            variant.memory["gpu_peak_mb"] = run_memory.gpu_mb


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
