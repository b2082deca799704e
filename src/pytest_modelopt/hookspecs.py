"""Hooks for projects and plugins that extend pytest-modelopt.

Implement them in the rootdir's ``conftest.py`` or in a plugin, as any pytest hook::

    def pytest_modelopt_fingerprint(hardware):
        return os.environ.get("CI_RUNNER_POOL")  # one baseline per pool of identical runners

    def pytest_modelopt_add_techniques(register):
        @register("my_int4", backend="torch", description="int4 weights through my library")
        def build(ctx): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_modelopt.hardware import Hardware


@pytest.hookspec(firstresult=True)
def pytest_modelopt_fingerprint(hardware: Hardware) -> str | None:
    """Name the machine whose baselines this run reads and writes, or return None.

    ``hardware`` is what was detected; its ``fingerprint`` is the default name (CPU model, ISA
    level, core count, GPUs, any ISA cap). Return another name to share baselines between
    machines you know to be alike (a pool of CI runners), or to keep apart machines that detect
    alike. The name is written as a slug (lowercase letters, digits and dashes). The first
    implementation that returns a name decides; ``--modelopt-machine`` (or its ini key, or
    ``MODELOPT_MACHINE``) overrides every implementation.
    """


@pytest.hookspec
def pytest_modelopt_add_techniques(register: Callable[..., Callable[[Any], Any]]) -> None:
    """Register techniques, once per session, before tests are collected.

    ``register`` is :func:`pytest_modelopt.register_technique`: call it as the decorator of a
    build function. A technique registered here can be named in markers, in ``Evaluator``
    calls and in searches like the built-in ones; a name already taken is replaced, with a
    warning naming both. As there, the registry names the variant a build returns.
    """
