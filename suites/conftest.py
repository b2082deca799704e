"""The bundled contract suites: run with `make suites` or `pytest suites/`."""
