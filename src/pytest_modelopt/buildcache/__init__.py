"""Built variants kept on disk between sessions, keyed on everything a build reads.

:mod:`~pytest_modelopt.buildcache.keys` says what a build is keyed on;
:mod:`~pytest_modelopt.buildcache.store` keeps and restores the entries.
"""

from pytest_modelopt.buildcache.keys import CACHE_FORMAT, Unhashable, build_key, spec_digest
from pytest_modelopt.buildcache.store import BuildCache

__all__ = ["CACHE_FORMAT", "BuildCache", "Unhashable", "build_key", "spec_digest"]
