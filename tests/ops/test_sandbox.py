import os
import signal
import time
from pathlib import Path

import pytest

from swapline.ops.sandbox import IsolatedCrash, IsolatedTimeout, run_isolated

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _child_can_import_this_module(monkeypatch):
    # The spawned child imports these helpers by module name ("tests.ops.test_sandbox"),
    # which resolves only with the repo root on sys.path (true for `python -m pytest`
    # from the root, not for the `pytest` script or another working directory).
    monkeypatch.syspath_prepend(str(ROOT))


# Top-level so the spawned child can import them by reference.
def _segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _add(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


def _fail() -> None:
    raise KeyError("missing thing")


class _Unpicklable(Exception):
    def __init__(self, a, b):  # pickling rebuilds with one arg: fails to unpickle
        super().__init__(f"{a}-{b}")


def _fail_unpicklable() -> None:
    raise _Unpicklable(1, 2)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _exit_nonzero() -> None:
    os._exit(3)


def test_returns_value_with_kwargs():
    assert run_isolated(_add, 2, 3, scale=10) == 50


def test_segfault_becomes_isolated_crash():
    with pytest.raises(IsolatedCrash) as info:
        run_isolated(_segfault, label="clip.mp4")
    message = str(info.value)
    assert "clip.mp4" in message and "SIGSEGV" in message and "corrupt" in message


def test_child_exception_keeps_its_type():
    with pytest.raises(KeyError, match="missing thing"):
        run_isolated(_fail)


def test_unpicklable_exception_becomes_runtime_error_with_traceback():
    with pytest.raises(RuntimeError, match="_Unpicklable") as info:
        run_isolated(_fail_unpicklable)
    assert "Traceback" in str(info.value)


def test_lambda_is_refused_before_starting_a_child():
    with pytest.raises(Exception, match="(?i)pickle"):
        run_isolated(lambda: 1)


def test_nonzero_exit_and_timeout():
    with pytest.raises(IsolatedCrash, match="exited with code 3"):
        run_isolated(_exit_nonzero)
    with pytest.raises(IsolatedTimeout):
        run_isolated(_sleep, 30, timeout=1.0)
