"""The conditions calls are timed under: the garbage collector off, torch's threads fixed."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Collect garbage once, then keep the collector off while timing."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def fixed_threads(threads: int | None) -> Iterator[None]:
    """Fix torch's intra-op thread count for the block (when torch is in use) and restore it."""
    torch = sys.modules.get("torch")
    if torch is None or threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def current_threads() -> int | None:
    """Return torch's intra-op thread count, or None when torch is not in use."""
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None
