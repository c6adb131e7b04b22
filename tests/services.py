"""Real Redis, Postgres and Celery workers for the scale-out tests and benchmark: each on a free
port on 127.0.0.1, its files in a temp folder, stopped by the PID it was started with (never by
name: other engineers' servers may run on this machine).

Debian's packages (.ci/run installs them): redis-server on PATH, Postgres under
/usr/lib/postgresql/<version>/bin. Postgres refuses to run as root, so as root the cluster runs
as the `postgres` user the package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PG_USER = "swapline"  # the cluster's superuser (initdb -U), whoever runs it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0, group: bool = False) -> None:
    """Signal the process we started (its process group when `group`: a worker's CLI dies at once
    while its celery child shuts down warm), wait for it, then kill what lingers."""
    if process.poll() is not None and not (group and _group_alive(process.pid)):
        return
    send = (lambda s: os.killpg(process.pid, s)) if group else (lambda s: os.kill(process.pid, s))
    deadline = time.monotonic() + timeout
    try:
        send(sig)
        while (process.poll() is None or (group and _group_alive(process.pid))) and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.poll() is None or (group and _group_alive(process.pid)):
            send(signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies left for init to reap do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited while we looked
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _wait_until(ready, process: subprocess.Popen, log: Path, what: str, timeout: float, group: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process, group=group)
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{what} did not start (exit {process.poll()}):\n{tail}")
        time.sleep(0.1)


# --- Redis --------------------------------------------------------------------------------------


def redis_missing() -> str | None:
    return None if shutil.which("redis-server") else "redis-server is not installed (.ci/run: apt-get install redis-server)"


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A throwaway Redis (no persistence); yields its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), folder / "redis.log"
    with log.open("w") as out:
        process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                                    "--save", "", "--appendonly", "no"], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until(lambda: _redis_pings(port), process, log, "redis-server", 20)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


def _redis_pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --- Postgres -----------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """Folder of initdb/postgres: on PATH, else Debian's newest /usr/lib/postgresql/<ver>/bin."""
    if found := shutil.which("initdb"):
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return versions[-1].parent if versions else None


def postgres_missing() -> str | None:
    if postgres_bin() is None:
        return "Postgres is not installed (.ci/run: apt-get install postgresql)"
    if os.geteuid() == 0 and not _user_exists("postgres"):
        return "running as root and there is no `postgres` user to run the throwaway cluster as"
    return None


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _as_owner() -> dict:
    """Popen arguments that run a Postgres binary as a user it accepts: `postgres` when we are root."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway cluster (initdb, trust auth, fsync off) in a folder of /tmp that its user can
    reach (pytest's tmp_path is private to root); yields a URL for dagster-postgres."""
    bindir = postgres_bin()
    data = Path(tempfile.mkdtemp(prefix="swapline-pg-"))
    owner = _as_owner()
    if owner:
        account = pwd.getpwnam(owner["user"])
        os.chown(data, account.pw_uid, account.pw_gid)
    port, log = free_port(), data.with_name(data.name + ".log")
    try:
        subprocess.run([str(bindir / "initdb"), "-D", str(data / "db"), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, cwd=data, **owner)
        with log.open("w") as out:
            process = subprocess.Popen([str(bindir / "postgres"), "-D", str(data / "db"), "-p", str(port), "-k", str(data),
                                        "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
                                       stdout=out, stderr=subprocess.STDOUT, cwd=data, **owner)
        try:
            _wait_until(lambda: _postgres_accepts(port), process, log, "postgres", 30)
            # psycopg2 named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which dagster-postgres lacks.
            yield f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{port}/postgres"
        finally:
            stop(process, signal.SIGINT)  # SIGINT: Postgres' fast shutdown
    finally:
        shutil.rmtree(data, ignore_errors=True)
        log.unlink(missing_ok=True)


def _postgres_accepts(port: int) -> bool:
    import psycopg2  # dagster-postgres brings it

    try:
        psycopg2.connect(host="127.0.0.1", port=port, user=PG_USER, dbname="postgres", connect_timeout=1).close()
        return True
    except psycopg2.OperationalError:
        return False


# --- Celery workers -------------------------------------------------------------------------------


@contextmanager
def celery_worker(name: str, queues: tuple[str, ...], config_yaml: Path, home: Path, env: dict[str, str],
                  threads: int = 1) -> Iterator[str]:
    """`dagster-celery worker start` with its own DAGSTER_HOME, a thread pool (the prefork pool
    forbids the child processes extraction and decoding start) of `threads`; yields the worker's
    hostname as Dagster's engine events name it. The CLI starts `celery` as its child, so the
    worker gets its own session and is stopped as the process group of the PID we started."""
    home.mkdir(parents=True, exist_ok=True)
    log = home / "worker.log"
    # One comma-separated -q: the CLI passes each -q on as a -Q, and Celery 5 keeps only the last.
    queue_args = ["-q", ",".join(queues)]
    command = [sys.executable, "-m", "dagster_celery.cli", "worker", "start", "-A", "dagster_celery.app", "-y", str(config_yaml),
               "-n", name, *queue_args, "--", "-P", "threads", "-c", str(threads)]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the CLI runs `celery` from PATH
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **env, "DAGSTER_HOME": str(home), "PATH": path})
    try:
        _wait_until(lambda: " ready." in log.read_text(errors="replace"), process, log, f"celery worker {name}", 90, group=True)
        yield f"{name}@{socket.gethostname()}"
    finally:
        stop(process, group=True)
