"""Built variants kept on disk between sessions, in pytest's cache directory.

An entry is a directory named by its key (:mod:`pytest_modelopt.buildcache.keys`) holding the
variant's files, the torch objects its :class:`~pytest_modelopt.variants.base.Restore` names
(``objects.pt``) and ``manifest.json``: what the variant recorded (runtime, precision, details,
notes, build time and memory), how to restore it, and the size and sha256 of every file.

Writes never leave a partial entry: an entry is assembled in a hidden directory beside the
others and renamed into place in one step, the manifest written last. A read checks every file
against the manifest before anything is loaded; an entry that does not match (cut short, edited,
from another format) is thrown away and the variant built again, with the reason in the log.
Files are copied into the session's work directory, so a variant never runs from the cache.

Nothing is unpickled that the plugin did not write: ``objects.pt`` is loaded only when its
sha256 is the one this plugin recorded when it saved it. It holds modules whose classes are
code (a pruned or quantized graph), which ``torch.load(weights_only=True)`` cannot read.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_modelopt.buildcache.keys import CACHE_FORMAT
from pytest_modelopt.readable import one_line
from pytest_modelopt.variants.base import BuildContext, Variant
from pytest_modelopt.worker import imported

MANIFEST = "manifest.json"
OBJECTS = "objects.pt"


class BuildCache:
    """The entries under ``root``: look a build up by its key, or keep one."""

    def __init__(self, root: Path, log: Callable[[str], None] = lambda message: None) -> None:
        self.root = root
        self.log = log

    def entry(self, key: str) -> Path:
        """Return where the entry of ``key`` lives (it may not exist)."""
        return self.root / key[:2] / key

    def restore(self, key: str, ctx: BuildContext, root: Path, label: str) -> Variant | None:
        """Return the variant kept under ``key``, its files copied back where they were.

        That is at their paths relative to ``ctx.workdir``, all inside ``root`` (the directory of
        all the spec's builds). None when there is no entry, or when the entry is unreadable or
        does not match its manifest: it is then removed, and the log says why.
        """
        entry = self.entry(key)
        if not (entry / MANIFEST).exists():
            return None
        try:
            # The build's warnings are in its notes already; restoring repeats some (torch's
            # deprecations while unpickling quantized tensors), which are not news.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return self._restore(entry, key, ctx, root)
        except Exception as error:  # whatever is wrong with it, the build runs again
            self.log(
                f"{label}: build cache entry {key[:12]} cannot be used "
                f"({type(error).__name__}: {one_line(str(error))[:200]}); building again"
            )
            self.discard(entry)
            return None

    def _restore(self, entry: Path, key: str, ctx: BuildContext, root: Path) -> Variant:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != CACHE_FORMAT or manifest.get("key") != key:
            raise ValueError(
                f"manifest of format {manifest.get('format')}, key {manifest.get('key')}"
            )
        for relative, recorded in manifest["files"].items():
            target = (ctx.workdir / relative).resolve()
            if not target.is_relative_to(root.resolve()):
                raise ValueError(f"{relative} lies outside the spec's work directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(entry / "files" / str(recorded["stored_as"]), target)
            _check(target, recorded)
        objects: dict[str, Any] = {}
        if manifest["objects"] is not None:
            import torch

            _check(entry / OBJECTS, manifest["objects"])
            # written by this plugin (the sha256 above is the one it recorded): see the module doc
            objects = torch.load(entry / OBJECTS, weights_only=False)
        restore = manifest["restore"]
        function = imported(restore["function"])
        variant: Variant = function(ctx, **restore["kwargs"], **objects)
        recorded = manifest["variant"]
        variant.runtime = recorded["runtime"]
        variant.precision = recorded["precision"]
        variant.details = recorded["details"]
        variant.notes = recorded["notes"]
        variant.memory["build_peak_mb"] = recorded["build_peak_mb"]
        variant.build_cache = (
            f"reused: built in {recorded['build_seconds']:.1f} s on {manifest['created']}"
        )
        return variant

    def keep(
        self, key: str, keyed_on: dict[str, Any], variant: Variant, workdir: Path, root: Path
    ) -> str:
        """Keep ``variant`` under ``key``; return what happened, for the log and the record.

        Its files are kept at their paths relative to ``workdir``, where it was built; they may
        lie elsewhere in ``root``, the directory of all the spec's builds (an ONNX export is
        shared). A variant without a Restore, or with files outside ``root``, is not kept (the
        reason is returned). An entry another process kept meanwhile stays as it is.
        """
        if variant.restore is None:
            return "not kept: the technique does not say how to restore its variant"
        self.root.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=self.root, prefix=".partial-"))
        try:
            why_not = self._assemble(partial, key, keyed_on, variant, workdir, root)
            if why_not:
                return why_not
            final = self.entry(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(partial, final)  # atomic: readers see no entry or a whole one
            except OSError:
                if (final / MANIFEST).exists():
                    return "kept (by another process)"
                raise
            return "kept"
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def _assemble(
        self,
        partial: Path,
        key: str,
        keyed_on: dict[str, Any],
        variant: Variant,
        workdir: Path,
        root: Path,
    ) -> str:
        """Write the entry's files into ``partial``; return why it cannot be kept ("" if it can)."""
        restore = variant.restore
        assert restore is not None
        files: dict[str, dict[str, Any]] = {}
        (partial / "files").mkdir()
        for index, path in enumerate(variant.files):
            if not path.resolve().is_relative_to(root.resolve()):
                return f"not kept: {path} is outside the spec's work directory"
            target = partial / "files" / str(index)  # not by its path, which may hold ".."
            shutil.copyfile(path, target)
            relative = os.path.relpath(path.resolve(), workdir.resolve())
            files[relative] = {**_record(target), "stored_as": target.name}
        objects = None
        if restore.objects:
            import torch

            from pytest_modelopt.buildcache import pickling

            try:
                torch.save(dict(restore.objects), partial / OBJECTS, pickle_module=pickling)
            except Exception as error:  # a module that cannot be pickled is rebuilt each time
                return f"not kept: its module cannot be saved ({type(error).__name__}: {error})"
            try:  # some pickle but do not load back (a module that holds a lambda's result)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.load(partial / OBJECTS, weights_only=False)
            except Exception as error:
                return f"not kept: its module does not load back ({type(error).__name__}: {error})"
            objects = _record(partial / OBJECTS)
        manifest = {
            "format": CACHE_FORMAT,
            "key": key,
            "keyed_on": keyed_on,
            "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "restore": {"function": restore.function, "kwargs": restore.kwargs},
            "variant": {
                "runtime": variant.runtime,
                "precision": variant.precision,
                "details": variant.details,
                "notes": variant.notes,
                "build_seconds": variant.build_seconds,
                "build_peak_mb": variant.memory.get("build_peak_mb"),
            },
            "files": files,
            "objects": objects,
        }
        try:
            text = json.dumps(manifest, indent=1, sort_keys=True)
        except TypeError as error:
            return f"not kept: its record is not JSON ({error})"
        (partial / MANIFEST).write_text(text, encoding="utf-8")
        return ""

    def discard(self, entry: Path) -> None:
        """Remove an entry: renamed aside first, so no reader sees it half-deleted."""
        aside = entry.with_name(f".discarded-{entry.name}-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.rename(entry, aside)
        except OSError:
            return  # gone already (another process discarded it)
        shutil.rmtree(aside, ignore_errors=True)


def _record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _check(path: Path, recorded: dict[str, Any]) -> None:
    """Raise ValueError unless ``path`` has the size and sha256 the manifest recorded."""
    size = path.stat().st_size
    if size != recorded["bytes"]:
        raise ValueError(f"{path.name} has {size} bytes, the manifest says {recorded['bytes']}")
    if _sha256(path) != recorded["sha256"]:
        raise ValueError(f"{path.name} does not match the sha256 the manifest recorded")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
