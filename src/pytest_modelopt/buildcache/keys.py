"""What a cached build is keyed on: the spec, the technique, its parameters, versions, machine.

Anything that can change what a build produces is in the key, so that a changed model, data set,
parameter, library, plugin module or machine builds again instead of reusing a stale artifact:

- the spec: the model's state (every tensor of its state dict, or a Keras model's weights), its
  architecture (its repr or config) and the source files of its classes; the example input and
  the calibration and training data (eval data is not used by a build); the student factory's
  source;
- the technique: its name, its resolved parameters and the source of the modules that build it
  (for the built-in techniques, every module of ``pytest_modelopt.variants``, whose helpers
  they share);
- the versions of Python, of this plugin and of every package the technique needs (and numpy);
- the machine: its fingerprint, the harness's thread count and the ISA-cap variables.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
import json
import os
import platform
import sys
from collections.abc import Mapping
from typing import Any

from pytest_modelopt.errors import ModeloptError

# Bumped when the cache's layout or the meaning of its key changes.
CACHE_FORMAT = 1


class Unhashable(ModeloptError):
    """Part of a spec cannot be hashed, so its builds are not cached (the reason says which)."""


def spec_digest(spec: Any) -> str:
    """Return a digest of everything in ``spec`` that a build reads.

    Raises Unhashable for a model or data the cache cannot hash (a plain Python callable, a
    batch of an unknown type): such a spec is built every session.
    """
    digest = hashlib.sha256()
    model = spec.load()
    framework = spec.framework
    _feed(digest, framework)
    if framework == "torch":
        _feed_torch_model(digest, model)
    elif framework == "keras":
        _feed(digest, keras_architecture(model))
        _feed(digest, list(model.get_weights()))
    else:
        raise Unhashable(f"{spec.name} is a plain Python model: its state cannot be hashed")
    for name in ("example_input", "calibration_data", "train_data"):
        _feed(digest, name)
        _feed(digest, getattr(spec, name))
    _feed(digest, _source_of(spec.student) if spec.student is not None else None)
    _feed(digest, spec.batch_size)
    return digest.hexdigest()


def keras_architecture(model: Any) -> str:
    """Return a Keras model's config as JSON, each layer named by its position in it.

    Keras names an unnamed layer from a counter of the whole process (``conv2d_5`` when five
    were made before it), so the same model gets other names in a session that made, or
    trained, other models first; the names change neither the outputs nor the speed. A layer
    is a config entry with a ``build_config`` (built layers and models) or an ``InputLayer``;
    every string equal to one of their names (the references between them) is renamed too.
    """
    config = json.loads(model.to_json())
    names: dict[str, str] = {}

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            inner = value.get("config")
            is_layer = "build_config" in value or value.get("class_name") == "InputLayer"
            if is_layer and isinstance(inner, dict) and isinstance(inner.get("name"), str):
                names.setdefault(inner["name"], f"layer{len(names)}")
            value = list(value.values())
        if isinstance(value, list):
            for item in value:
                collect(item)

    def renamed(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: renamed(item) for key, item in value.items()}
        if isinstance(value, list):
            return [renamed(item) for item in value]
        return names.get(value, value) if isinstance(value, str) else value

    collect(config)
    return json.dumps(renamed(config), sort_keys=True)


def build_key(
    spec_hash: str,
    technique: Any,
    params: Mapping[str, Any],
    *,
    fingerprint: str,
    threads: int | None,
) -> tuple[str, dict[str, Any]]:
    """Return the build's key and what it was made of (kept in the entry, to say why it missed).

    ``technique`` is the registry's :class:`~pytest_modelopt.registry.Technique`; a chain is
    keyed on the modules of each of its parts.
    """
    from pytest_modelopt import __version__
    from pytest_modelopt.isa_cap import ISA_CAP_VARIABLES
    from pytest_modelopt.registry import builtin_modules, get_technique

    parts = technique.components or (technique.name,)
    registered = {get_technique(part).build.__module__ for part in parts}
    modules = sorted(registered | {*builtin_modules()})
    keyed_on = {
        "format": CACHE_FORMAT,
        "spec": spec_hash,
        "technique": technique.name,
        "params": {name: repr(value) for name, value in sorted(params.items())},
        "code": {module: _module_digest(module) for module in modules},
        "python": platform.python_version(),
        "pytest_modelopt": __version__,
        "packages": {
            name: _version(name) for name in sorted({*technique.requires.packages, "numpy"})
        },
        "fingerprint": fingerprint,
        "threads": threads,
        "isa_cap": {name: os.environ.get(name) for name in sorted(ISA_CAP_VARIABLES)},
    }
    text = json.dumps(keyed_on, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest(), keyed_on


def _feed_torch_model(digest: Any, model: Any) -> None:
    """Feed a torch module's architecture, the source of its classes and its state."""
    _feed(digest, repr(model))
    classes = sorted({type(module) for module in model.modules()}, key=_qualified_name)
    for cls in classes:
        _feed(digest, _qualified_name(cls))
        _feed(digest, _file_digest_of(cls))
    _feed(digest, dict(model.state_dict()))


def _feed(digest: Any, value: Any) -> None:
    """Feed ``value`` to ``digest`` with its type and shape, so that different values differ."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        if tensor.is_quantized:
            tensor = tensor.int_repr()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray | numpy.generic):
        array = numpy.ascontiguousarray(value)
        digest.update(f"array {array.dtype} {array.shape}".encode())
        digest.update(array.tobytes())
        return
    if isinstance(value, Mapping):
        digest.update(f"mapping {len(value)}".encode())
        for key in sorted(value, key=str):
            _feed(digest, str(key))
            _feed(digest, value[key])
        return
    if isinstance(value, list | tuple):
        digest.update(f"{type(value).__name__} {len(value)}".encode())
        for item in value:
            _feed(digest, item)
        return
    if value is None or isinstance(value, str | int | float | bool | bytes):
        digest.update(f"{type(value).__name__} {value!r}".encode())
        return
    raise Unhashable(f"a {type(value).__name__} in the spec cannot be hashed")


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


_FILE_DIGESTS: dict[str, str] = {}


def _file_digest_of(item: Any) -> str:
    """Return the digest of the source file that defines ``item`` ("" for compiled code)."""
    try:
        path = inspect.getsourcefile(item)
    except TypeError:  # a builtin or C extension class
        return ""
    return _file_digest(path) if path else ""


def _file_digest(path: str) -> str:
    if path not in _FILE_DIGESTS:
        try:
            with open(path, "rb") as handle:
                _FILE_DIGESTS[path] = hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            _FILE_DIGESTS[path] = ""
    return _FILE_DIGESTS[path]


def _module_digest(module_name: str) -> str:
    module = importlib.import_module(module_name)
    path = getattr(module, "__file__", None)
    return _file_digest(path) if path else ""


def _source_of(function: Any) -> str:
    """Return a factory's source, or its name where the source cannot be read."""
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}"


def _version(import_name: str) -> str | None:
    """Return the installed version of the distribution that provides ``import_name``."""
    distributions = _import_names().get(import_name, [import_name])
    for distribution in distributions:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


_PACKAGES: dict[str, list[str]] = {}


def _import_names() -> Mapping[str, list[str]]:
    if not _PACKAGES:
        _PACKAGES.update(importlib.metadata.packages_distributions())
    return _PACKAGES
