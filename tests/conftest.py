# Imported before any test: pytester restores sys.modules after each test, unloading what the test
# imported first, and numpy's C extension cannot be loaded twice in one process (a test that runs
# the `modelopt` command in process, then any later numpy import, failed with "cannot load module
# more than once per process").
import numpy  # noqa: F401
import pytest

from fakes import CONFTEST, FAST_INI


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester project with the fake techniques and short timing."""
    pytester.makeconftest(CONFTEST)
    pytester.makeini(FAST_INI)
    return pytester
