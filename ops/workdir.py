"""Durable work checkpoints of a training run, outside the artifact being published.

    work_dir/
        latest.json        {"dir": "step-000001200", "step": 1200, "previous": "step-000000600"}
        step-000001200/    a checkpoint folder (checkpoint.py), written whole before the pointer moves
        step-000000600/    the previous good one, kept in case the newest turns out unreadable

A save writes a NEW step folder, then atomically replaces latest.json, then deletes the other
step folders. A crash at any point leaves latest.json naming a complete folder; a folder the
pointer does not name yet is an unfinished write and is ignored (and swept by the next save).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Callable

from swapline.ops.checkpoint import CheckpointError, verify_checkpoint
from swapline.ops.storage import atomic_write_json

logger = logging.getLogger(__name__)

POINTER = "latest.json"
STEP_DIR = re.compile(r"^step-(\d+)$")


def _pointer(work_dir: Path) -> dict:
    try:
        return json.loads((work_dir / POINTER).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("%s: unreadable (%s); looking at the step folders instead", work_dir / POINTER, exc)
        return {}


def _step_dirs(work_dir: Path) -> list[Path]:
    """step-<N> folders, newest first."""
    found = [(int(m.group(1)), p) for p in work_dir.glob("step-*") if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def _candidates(work_dir: Path) -> list[Path]:
    """The pointer's folder, its previous one, then older step folders; newest first."""
    pointer = _pointer(work_dir)
    named = [work_dir / pointer[k] for k in ("dir", "previous") if pointer.get(k)]
    limit = pointer.get("step")
    rest = [p for p in _step_dirs(work_dir) if p not in named
            and (limit is None or int(STEP_DIR.match(p.name).group(1)) <= limit)]
    return named + rest


def latest_checkpoint(work_dir: Path | None) -> Path | None:
    """The newest work checkpoint whose files verify, or None. A newer one that does not
    verify (corrupt, truncated) is skipped with a warning naming it and the reason."""
    if work_dir is None or not Path(work_dir).is_dir():
        return None
    for folder in _candidates(Path(work_dir)):
        try:
            verify_checkpoint(folder)
            return folder
        except CheckpointError as exc:
            logger.warning("work checkpoint %s is unusable, falling back to the previous one: %s", folder, exc)
    return None


def save_work_checkpoint(work_dir: Path, step: int, write: Callable[[Path], object]) -> Path:
    """write(folder) a new step folder, point latest.json at it, drop all but it and the previous."""
    work_dir = Path(work_dir)
    folder = work_dir / f"step-{step:09d}"
    pointer = _pointer(work_dir)
    if pointer.get("dir") == folder.name and latest_checkpoint(work_dir) == folder:
        return folder  # this step is already saved (an end save right after a timed one)
    shutil.rmtree(folder, ignore_errors=True)  # an unfinished write of an earlier crashed run
    write(folder)
    previous = latest_checkpoint(work_dir)
    atomic_write_json(work_dir / POINTER, {"dir": folder.name, "step": step,
                                           "previous": previous.name if previous else None})
    keep = {folder, previous}
    for old in _step_dirs(work_dir):
        if old not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return folder
