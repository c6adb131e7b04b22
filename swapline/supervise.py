"""`swapline run` and `refresh` as a small supervisor around a child process that runs them.

The child does the work (Dagster runs, in-process); the supervisor stays responsive whatever
the child is doing, so that:
- before anything starts, dead runs are cleaned up (swapline/liveness.py): a killed training no
  longer holds the `gpu` slot;
- while the child waits for a pool slot, the terminal says for what, behind which run and since
  when (and runs that die meanwhile are cleaned up, so the wait ends by itself);
- progress lines of the running step (training loss and ETA, frames converted) are shown;
- Ctrl-C or SIGTERM stops everything within seconds: the child gets SIGINT (training saves its
  work checkpoint at the next step boundary, `ops/interrupts.py`), and if it has not exited
  after GRACE_S it is killed and its runs are marked failed with their slots freed. The
  artifact store publishes atomically, so nothing half-written is ever published.
The child runs in its own session (a terminal's Ctrl-C reaches the supervisor only, which
forwards it once) and stops by itself if the supervisor dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

import dagster as dg

from swapline.liveness import LIVE_STATUSES, PID_TAG, pool_wait, reap_dead_runs

CHILD_ENV = "SWAPLINE_SUPERVISOR_PID"
GRACE_S = 8.0  # after Ctrl-C: time the child has to save and exit before it is killed
POLL_S = 1.0
REPEAT_WAIT_S = 60.0  # a wait still going on is said again this often
PROGRESS_EVERY_S = 10.0


def is_child() -> bool:
    return CHILD_ENV in os.environ


def supervise(argv: list[str], echo: Callable[[str], None] = lambda line: print(line, flush=True)) -> int:
    """Run `swapline <argv>` in a child and watch it; the child's exit status, 130 after Ctrl-C."""
    with dg.DagsterInstance.get() as instance:
        reap_dead_runs(instance, echo=lambda line: echo(f"== {line}"))
        child = subprocess.Popen([sys.executable, "-m", "swapline.cli", *argv], start_new_session=True,
                                 env={**os.environ, CHILD_ENV: str(os.getpid())})
        stop = _Stopper(child, echo)
        watch = _Watch(instance, child.pid, echo)
        try:
            while child.poll() is None:
                time.sleep(POLL_S)
                if stop.overdue():
                    echo(f"== the run did not stop within {GRACE_S:.0f}s: killing it")
                    child.kill()
                    child.wait()
                elif child.poll() is None:
                    watch.tick()
        finally:
            stop.restore()
        reap_dead_runs(instance, echo=lambda line: echo(f"== {line}"))  # the child's, if it was killed
    if stop.signalled:
        echo("== stopped; `swapline refresh` carries on from where this left off")
        return 130
    return child.returncode


class _Stopper:
    """SIGINT/SIGTERM to the supervisor: forwarded to the child once, then a deadline."""

    def __init__(self, child: subprocess.Popen, echo: Callable[[str], None]):
        self.child, self.echo, self.deadline = child, echo, None
        self.previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    @property
    def signalled(self) -> bool:
        return self.deadline is not None

    def handle(self, signo, frame) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + GRACE_S
            self.echo(f"== {signal.Signals(signo).name}: stopping (training saves its checkpoint first)")
            if self.child.poll() is None:
                self.child.send_signal(signal.SIGINT)

    def overdue(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline and self.child.poll() is None

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class _Watch:
    """What the child's runs are doing, said when it matters: pool waits and progress."""

    def __init__(self, instance: dg.DagsterInstance, pid: int, echo: Callable[[str], None]):
        self.instance, self.pid, self.echo = instance, pid, echo
        self.said: dict[str, tuple[str, float]] = {}  # run id -> (last wait text, when)
        self.cursors: dict[str, str | None] = {}
        self.last_progress = 0.0

    def tick(self) -> None:
        reap_dead_runs(self.instance, echo=lambda line: self.echo(f"== {line}"))
        runs = self.instance.get_run_records(dg.RunsFilter(tags={PID_TAG: str(self.pid)}, statuses=LIVE_STATUSES))
        for record in runs:
            run_id = record.dagster_run.run_id
            wait = pool_wait(self.instance, run_id)
            text, when = self.said.get(run_id, ("", 0.0))
            if wait and (wait != text or time.monotonic() - when > REPEAT_WAIT_S):
                self.echo(f"    {wait}")
                self.said[run_id] = (wait, time.monotonic())
            self._progress(run_id)

    def _progress(self, run_id: str) -> None:
        """The step's own log lines (training loss and ETA, frames converted): warnings always,
        the newest info line every PROGRESS_EVERY_S."""
        page = self.instance.get_records_for_run(run_id, cursor=self.cursors.get(run_id), limit=500)
        self.cursors[run_id] = page.cursor
        latest = None
        for record in page.records:
            entry = record.event_log_entry
            if entry.is_dagster_event:
                continue
            if entry.level >= 30:  # logging.WARNING
                self.echo(f"    warning: {entry.user_message}")
            else:
                latest = entry.user_message
        if latest and time.monotonic() - self.last_progress >= PROGRESS_EVERY_S:
            self.echo(f"    {latest}")
            self.last_progress = time.monotonic()


def watch_parent() -> None:
    """In the child: stop (as after Ctrl-C) if the supervisor dies, so no orphan keeps the GPU."""
    parent = int(os.environ[CHILD_ENV])

    def loop() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(GRACE_S)
        os._exit(130)

    threading.Thread(target=loop, name="watch-supervisor", daemon=True).start()
