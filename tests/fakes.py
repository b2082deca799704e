"""A pure-Python model and fake techniques, for plugin tests that need no ML library.

``CONFTEST`` is written into each pytester project; ``FAST_INI`` keeps timing short.
"""

CONFTEST = '''
import pytest
from pathlib import Path

from pytest_modelopt import ModelSpec, Variant, register_technique
from pytest_modelopt.errors import NoEffectError


class Toy:
    """A 'model': busy-loops for `work` steps, returns two class scores."""

    def __init__(self, work=20_000):
        self.work = work

    def __call__(self, x):
        total = 0
        for i in range(self.work):
            total += i
        return [[float(x), 2.0 * x]]


def _variant(ctx, work, size=10):
    path = Path(ctx.workdir) / "model.bin"
    path.write_bytes(b"w" * size)
    return Variant(Toy(work), (path,), runtime="python", precision="fp32")


@register_technique("fake_fast", frameworks=("python",))
def build_fast(ctx):
    """Does a tenth of the reference's work."""
    return _variant(ctx, ctx.model.work // 10)


@register_technique("fake_slow", frameworks=("python",))
def build_slow(ctx):
    """Does three times the reference's work."""
    return _variant(ctx, ctx.model.work * 3)


@register_technique("fake_same", frameworks=("python",))
def build_same(ctx):
    """Does exactly the reference's work: a true speedup of 1.0."""
    return _variant(ctx, ctx.model.work)


@register_technique("fake_needs_package", frameworks=("python",), packages="no_such_pkg_zz")
def build_needs_package(ctx):
    return _variant(ctx, ctx.model.work)


@register_technique("fake_needs_gpu", frameworks=("python",), gpu=True)
def build_needs_gpu(ctx):
    return _variant(ctx, ctx.model.work)


@register_technique("fake_crashes", frameworks=("python",))
def build_crashes(ctx):
    """Builds, but its variant raises when called."""
    def run(x):
        raise ValueError("shape mismatch in layer 3")

    variant = _variant(ctx, ctx.model.work)
    variant.run = run
    return variant


@register_technique("fake_noop", frameworks=("python",))
def build_noop(ctx):
    raise NoEffectError("fake_noop changed nothing in toy: nothing to optimize")


@pytest.fixture(scope="module")
def modelopt_spec():
    return ModelSpec(name="toy", factory=Toy, example_input=3.0)
'''

FAST_INI = """
[pytest]
modelopt_max_time = 0.3
modelopt_warmup = 0.05
"""
