"""Durable work checkpoints: a training process killed mid-run (SIGKILL) loses at most one
checkpoint interval, and resuming reproduces the uninterrupted run."""

import json
import logging
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from swapline.ops.checkpoint import CheckpointError, load_checkpoint, read_state
from swapline.ops.model import FaceSwapAE, ModelConfig
from swapline.ops.train import TrainConfig, train
from swapline.ops.workdir import POINTER, latest_checkpoint
from tests.conftest import structured_faces

ITERATIONS, EVERY = 20, 4

# The child trains exactly like _config() below, from faces saved by the test, and is killed.
CHILD = """
import sys, numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
from swapline.ops.model import ModelConfig
from swapline.ops.train import TrainConfig, train
d = np.load(sys.argv[1])
train(d["a"], d["b"], d["ma"], None, ModelConfig(), TrainConfig(**__import__("json").loads(sys.argv[4])), "cpu",
      checkpoint_dir=sys.argv[2] + "/final", work_dir=sys.argv[2] + "/work")
"""


FACES_A, FACES_B = structured_faces(24, 64, 0), structured_faces(24, 64, 1)
MASKS_A = np.repeat(((np.mgrid[0:64, 0:64] / 64 - 0.5) ** 2).sum(0)[None] < 0.12, 24, axis=0).astype(np.uint8) * 255
SETTINGS = {"iterations": ITERATIONS, "batch_size": 4, "lr": 5e-4, "log_every": 1,
            "checkpoint_every_steps": EVERY, "checkpoint_minutes": 0}


def _train(tmp_path, name, work=None, **overrides):
    return train(FACES_A, FACES_B, MASKS_A, None, ModelConfig(), TrainConfig(**{**SETTINGS, **overrides}), "cpu",
                 checkpoint_dir=tmp_path / name, work_dir=work)


def _kill_after_first_checkpoint(tmp_path):
    np.savez(tmp_path / "faces.npz", a=FACES_A, b=FACES_B, ma=MASKS_A)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "faces.npz"), str(tmp_path / "crash"),
                              str(torch.get_num_threads()), json.dumps(SETTINGS)])
    pointer = tmp_path / "crash" / "work" / POINTER
    deadline = time.monotonic() + 60
    while not pointer.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL, "the child ended before it could be killed"
    assert pointer.exists(), "the child wrote no work checkpoint before it was killed"
    return tmp_path / "crash" / "work"


def test_sigkill_mid_training_then_resume_matches_an_uninterrupted_run(tmp_path):
    work = _kill_after_first_checkpoint(tmp_path)
    # (a) The last checkpoint written before the kill verifies and loads.
    latest = latest_checkpoint(work)
    assert latest is not None and not (tmp_path / "crash" / "final").exists()
    killed_at = load_checkpoint(latest, FaceSwapAE(ModelConfig()))["step"]
    assert 0 < killed_at < ITERATIONS and killed_at % EVERY == 0
    # (b) Resuming from it to the same total reproduces the uninterrupted loss curve.
    resumed = _train(tmp_path, "resumed", work)
    straight = _train(tmp_path, "straight")
    assert resumed.start_step == killed_at and resumed.resumed_from == latest
    assert [s for s, _, _ in resumed.losses] == list(range(killed_at + 1, ITERATIONS + 1))
    whole = read_state(tmp_path / "resumed")["extra"]["losses"]
    assert [s for s, _, _ in whole] == list(range(1, ITERATIONS + 1))
    np.testing.assert_allclose(np.array(whole), np.array(straight.losses), rtol=1e-4, atol=1e-6)
    curve = np.array(straight.losses)[:, 1:]
    assert (curve[-4:].mean(0) < curve[:4].mean(0)).all()  # and it did learn


def test_sigint_saves_at_the_step_boundary_and_the_history_survives_a_crash(tmp_path):
    """Ctrl-C: the step in progress finishes, the work checkpoint is saved, training stops with
    Interrupted; the next run resumes and its history names the crashed and interrupted runs."""
    work = _kill_after_first_checkpoint(tmp_path)  # run 1: killed
    settings = {**SETTINGS, "iterations": 10_000, "checkpoint_every_steps": 0}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "faces.npz"), str(tmp_path / "crash"),
                              str(torch.get_num_threads()), json.dumps(settings)], stderr=subprocess.PIPE, text=True)
    killed_at = json.loads((work / POINTER).read_text())["step"]
    time.sleep(3)  # run 2: training
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=10) != 0
    assert "Interrupted: training interrupted at step" in child.stderr.read()
    state = read_state(latest_checkpoint(work))
    assert state["step"] > killed_at
    assert [(r["start_step"], r["stopped_by"]) for r in state["extra"]["runs"]] == [(0, "killed or crashed"), (killed_at, "interrupted")]
    third = _train(tmp_path, "third", work, iterations=state["step"] + 2)  # run 3
    assert third.start_step == state["step"] and [s for s, _, _ in third.history][:2] == [1, 2]
    assert [r["stopped_by"] for r in third.runs] == ["killed or crashed", "interrupted", "iterations"]


def test_work_dir_keeps_the_newest_and_the_previous(tmp_path):
    result = _train(tmp_path, "final", tmp_path / "work", iterations=12)
    assert result.stopped_by == "iterations"
    assert sorted(p.name for p in (tmp_path / "work").glob("step-*")) == ["step-000000008", "step-000000012"]
    assert json.loads((tmp_path / "work" / POINTER).read_text())["previous"] == "step-000000008"
    # A re-run with the work dir resumes at the end and does nothing.
    again = _train(tmp_path, "again", tmp_path / "work", iterations=12)
    assert (again.start_step, again.step, again.losses) == (12, 12, [])


def test_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
    _train(tmp_path, "final", tmp_path / "work", iterations=8)
    newest = tmp_path / "work" / "step-000000008"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(tmp_path / "work") == tmp_path / "work" / "step-000000004"
    assert "step-000000008" in caplog.text and "truncated" in caplog.text
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(newest, FaceSwapAE(ModelConfig()))
    # Training resumes from the previous one instead of starting over.
    assert _train(tmp_path, "again", tmp_path / "work", iterations=8).start_step == 4


def test_work_checkpoint_of_another_model_is_not_resumed(tmp_path):
    _train(tmp_path, "final", tmp_path / "work", iterations=4)
    other = train(FACES_A[:4], FACES_B[:4], None, None, ModelConfig(resolution=128),
                  TrainConfig(iterations=1, batch_size=2), "cpu", checkpoint_dir=tmp_path / "o", work_dir=tmp_path / "work")
    assert other.start_step == 0 and other.resumed_from is None


def test_stop_on_time_budget_and_on_target_loss(tmp_path):
    timed = _train(tmp_path, "t", iterations=10_000, max_seconds=0.5, checkpoint_every_steps=0)
    assert timed.stopped_by == "time" and 0 < timed.step < 10_000
    assert read_state(tmp_path / "t")["step"] == timed.step
    target = _train(tmp_path, "l", iterations=10_000, target_loss=10.0)
    assert (target.stopped_by, target.step) == ("target_loss", 1)
