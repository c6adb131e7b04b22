"""Ctrl-C and SIGTERM during long work: held until a safe point, never lost.

Dagster raises an interrupt inside a step the moment it arrives, which can land in the middle
of an optimizer update: a checkpoint taken then would mix updated and stale weights. Training
therefore holds SIGINT/SIGTERM while a step runs (`deferred`), saves its work checkpoint at the
next step boundary and stops with `Interrupted`. `requested()` tells the CLI's run loop not to
start another step after an interrupt.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

_requested = threading.Event()
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Work stopped at a safe point after SIGINT/SIGTERM; what it had done is saved."""


def request() -> None:
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


@contextmanager
def deferred() -> Iterator[Callable[[], bool]]:
    """Within the block, SIGINT/SIGTERM only set a flag; the yielded function says whether one
    arrived. Outside the main thread (no signals can be handled there) it says False."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    held = threading.Event()

    def hold(signo, frame) -> None:
        held.set()
        request()

    previous = {sig: signal.signal(sig, hold) for sig in SIGNALS}
    try:
        yield held.is_set
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
