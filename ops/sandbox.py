"""Run risky work (decoding untrusted media) in a child process.

FFmpeg has crashed the whole interpreter (SIGSEGV/SIGBUS) on streams truncated inside
their first frame; a crash in a child only costs that child. The child is started with
the "forkserver" method: the parent (Dagster, a test runner) may have threads, and forking a
threaded process can deadlock the child on a lock some other thread held; the fork server is a
single-threaded process started once, with the media modules already imported, so each child
is a cheap fork of it (about 10 ms) rather than a fresh interpreter that imports them again
(about 150 ms, which dominated adding a few photos to a large faceset).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable

logger = logging.getLogger(__name__)

_GRACE_S = 5.0  # how long a child that already answered may take to exit
# Imported once by the fork server. Nothing here starts threads at import (torch would: it is
# imported by the child that needs it).
_PRELOAD = ["swapline.ops.sandbox", "swapline.ops.images", "swapline.ops.media"]


_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_hidden() -> Any:
    """multiprocessing makes every child import the parent's __main__ again before it runs (to
    find functions defined there). Under Dagster that main is Dagster's CLI, so each child paid
    ~0.5 s importing all of Dagster; a benchmark or test runner costs the same. The child runs a
    module-level function (run_isolated's contract) and needs nothing from __main__, so main's
    name and path are hidden while the child starts (milliseconds, under a lock)."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {key: main.__dict__[key] for key in ("__spec__", "__file__") if key in main.__dict__}
    with _MAIN_LOCK:
        try:
            main.__spec__ = None
            main.__dict__.pop("__file__", None)
            yield
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)  # only read when the server starts (once per process)
    return ctx


class IsolatedCrash(RuntimeError):
    """The child process died (signal or nonzero exit) before returning a result."""


class IsolatedTimeout(IsolatedCrash):
    """The child process ran past its time limit and was killed."""


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "did not exit"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def _child_main(conn: Connection, call: bytes) -> None:
    """Entry point of the child: run the call and send back ("ok", value) or ("err", ...)."""
    try:
        # Unpickled here, not by multiprocessing, so a function the child cannot import
        # comes back as an ImportError instead of looking like a crash.
        fn, args, kwargs = pickle.loads(call)
        result = fn(*args, **kwargs)
        message: tuple = ("ok", pickle.dumps(result))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        tb = traceback.format_exc()
        try:
            blob = pickle.dumps(exc)
            pickle.loads(blob)  # some exceptions pickle but cannot be rebuilt
        except Exception:  # noqa: BLE001
            blob = None
        message = ("err", blob, tb, f"{type(exc).__name__}: {exc}")
    try:
        conn.send(message)
    except Exception:  # noqa: BLE001 - e.g. an unpicklable return value
        conn.send(("err", None, traceback.format_exc(), "result could not be sent back"))
    finally:
        conn.close()


def _stop(proc: multiprocessing.process.BaseProcess) -> None:
    if proc.is_alive():
        proc.kill()
    proc.join(_GRACE_S)


def _raise_child_error(message: tuple, label: str) -> None:
    _, blob, tb, summary = message
    if blob is not None:
        exc = pickle.loads(blob)
        if isinstance(exc, BaseException):
            exc.add_note(f"(raised in an isolated child process for {label})\n{tb}")
            raise exc
    raise RuntimeError(f"{label}: child process failed: {summary}\n{tb}")


def run_isolated(
    fn: Callable[..., Any],
    *args: Any,
    timeout: float | None = None,
    label: str = "",
    **kwargs: Any,
) -> Any:
    """Call fn(*args, **kwargs) in an isolated child process and return its result.

    fn, its arguments and its result must be picklable (fn a top-level function).
    An exception in the child is re-raised here as the same type when it pickles,
    else as RuntimeError carrying the child's traceback. A child that dies raises
    IsolatedCrash; one that runs past `timeout` seconds is killed (IsolatedTimeout).
    """
    label = label or getattr(fn, "__qualname__", repr(fn))
    ctx = _context()
    call = pickle.dumps((fn, args, kwargs))  # fails here, clearly, for a lambda or closure
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(sender, call), daemon=True)
    with _main_hidden():
        proc.start()
    sender.close()  # our copy; the pipe then reports EOF as soon as the child dies
    try:
        if not receiver.poll(timeout):
            _stop(proc)
            raise IsolatedTimeout(f"{label}: isolated child ran past {timeout} s and was killed")
        try:
            message = receiver.recv()
        except EOFError:
            message = None
        proc.join(_GRACE_S)
    finally:
        receiver.close()
        _stop(proc)
    if message is None:
        raise IsolatedCrash(
            f"{label}: isolated child process {_describe_exit(proc.exitcode)} "
            "(the media is probably truncated or corrupt)"
        )
    if message[0] == "ok":
        return pickle.loads(message[1])
    _raise_child_error(message, label)
