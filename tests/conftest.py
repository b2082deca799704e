import pytest

from fakes import CONFTEST, FAST_INI


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester project with the fake techniques and short timing."""
    pytester.makeconftest(CONFTEST)
    pytester.makeini(FAST_INI)
    return pytester
