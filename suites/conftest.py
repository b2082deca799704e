"""The bundled contract suites: run with `make suites` or `pytest suites/`.

The suites time many variants; unless the command line or an ini file says otherwise, each
variant is timed for up to 3 s (the plugin's default is 10 s), which keeps `make suites` near
20 minutes on 2 cores. Pass `--modelopt-max-time 10` for tighter intervals.
"""

import pytest

SUITE_MAX_TIME = "3"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--modelopt-max-time") is None and not config.getini("modelopt_max_time"):
        config.option.modelopt_max_time = SUITE_MAX_TIME
