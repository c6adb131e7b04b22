"""Data-parallel training (ops/distributed.py, swapline/ddp_worker.py) with real processes:
torchrun, two CPU ranks on gloo, one thread each.

Run as a script under torchrun (`torchrun tests/ops/test_ddp.py equivalence OUT`), this file is
also the rank side of the equivalence test."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from swapline.ops.distributed import Batches, PairForward, shard_rows, update
from swapline.ops.model import FaceSwapAE, ModelConfig
from swapline.ops.train_config import TrainConfig

MODEL = ModelConfig(resolution=64, preset="lite")
GLOBAL, STEPS, LR = 8, 3, 1.0  # global batch per side; plain SGD steps
# fp64: in fp32 the sums over one batch and over two half batches round differently (1.4e-6 on
# a decoder bias gradient, 1.4e-5 on the weights after 3 steps at this rate); in fp64 only a
# real difference in what the ranks compute could reach the tolerance.
DTYPE = torch.float64
LOSS = TrainConfig(iterations=STEPS, batch_size=GLOBAL)  # l1 + mask + SSIM, the defaults


def torchrun(*args: str, ranks: int = 2, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", *args]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


# ---------------------------------------------------------------- equivalence with one process

def _global_batches(step: int) -> Batches:
    """Fixed (warped, target, mask) batches of GLOBAL faces per side, the same in every process.
    Masks of ones: the masked L1 is then a plain mean, which shards average exactly."""
    g = torch.Generator().manual_seed(100 + step)
    out = []
    for _ in range(2):
        target = torch.rand((GLOBAL, 3, 64, 64), generator=g, dtype=DTYPE)  # (B,3,R,R)
        warped = (target + 0.1 * torch.randn(target.shape, generator=g, dtype=DTYPE)).clamp(0, 1)
        out.append((warped, target, torch.ones(GLOBAL, 1, 64, 64, dtype=DTYPE)))
    return out


def _fresh_model() -> FaceSwapAE:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return FaceSwapAE(MODEL).to(DTYPE, memory_format=torch.channels_last)


def _train_steps(net: torch.nn.Module, model: FaceSwapAE, batches_of) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for step in range(STEPS):
        update(net, optimizer, batches_of(step), LOSS, torch.channels_last, contextlib.nullcontext)


def _equivalence_rank(out: str) -> None:
    """One rank: DDP over PairForward, trained on this rank's half of each global batch."""
    import torch.distributed as dist
    from safetensors.torch import save_file

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, per = _fresh_model(), GLOBAL // world
    net = torch.nn.parallel.DistributedDataParallel(PairForward(model), gradient_as_bucket_view=True)
    _train_steps(net, model, lambda step: [tuple(t[rank * per : (rank + 1) * per] for t in side) for side in _global_batches(step)])
    if rank == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
    dist.destroy_process_group()


def test_two_ranks_end_with_the_parameters_of_one_process_on_the_global_batch(tmp_path):
    torchrun(__file__, "equivalence", str(tmp_path / "ddp.safetensors"))
    from safetensors.torch import load_file

    ddp = load_file(tmp_path / "ddp.safetensors")
    one = _fresh_model()
    _train_steps(PairForward(one), one, _global_batches)
    start, half = _fresh_model().state_dict(), _fresh_model()
    _train_steps(PairForward(half), half, lambda step: [tuple(t[: GLOBAL // 2] for t in side) for side in _global_batches(step)])
    error = max((ddp[k] - v).abs().max().item() for k, v in one.state_dict().items())
    moved = max((start[k] - v).abs().max().item() for k, v in one.state_dict().items())
    off = max((half.state_dict()[k] - v).abs().max().item() for k, v in one.state_dict().items())
    assert error < 1e-6 and moved > 1e-3, (error, moved)
    assert off > 100 * error  # one shard alone is a different step: the test can tell


def test_shards_of_all_ranks_are_the_global_batch():
    draws = [shard_rows(50, 12, torch.Generator().manual_seed(3), rank, 4) for rank in range(4)]
    assert torch.equal(torch.cat(draws), torch.randint(50, (12,), generator=torch.Generator().manual_seed(3)))


def test_gpus_must_split_the_global_batch_evenly():
    assert TrainConfig(iterations=1, batch_size=16, gpus=4).gpus == 4
    for bad in ({"batch_size": 6, "gpus": 4}, {"gpus": 0}, {"ddp_backend": "mpi"}):
        with pytest.raises(ValueError):
            TrainConfig(iterations=1, **bad)


# ---------------------------------------------------------------- the worker: checkpoints, resume, stops

def _faces(n: int, seed: int) -> np.ndarray:
    """(n,64,64,3) uint8 gradients with a bright blob: structured, learnable."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 64
    out = []
    for _ in range(n):
        colour, centre = rng.random(3), 0.3 + 0.4 * rng.random(2)
        blob = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / 0.02)[..., None]
        img = np.stack([colour[c] * xx + (1 - colour[c]) * yy for c in range(3)], axis=-1)
        out.append(((img * (1 - blob) + blob) * 255).round().astype(np.uint8))
    return np.stack(out)


def launch(tmp: Path, name: str, **train) -> dict[int, str]:
    """The worker on 2 ranks with its spec in tmp; returns each rank's log lines, by rank."""
    for side, seed in (("a", 1), ("b", 2)):
        if not (tmp / f"{side}.npy").exists():
            np.save(tmp / f"{side}.npy", _faces(24, seed))
    config = TrainConfig(**{"batch_size": 4, "log_every": 2, "checkpoint_minutes": 0, "compile": False, **train})
    spec = {"faces_a": str(tmp / "a.npy"), "faces_b": str(tmp / "b.npy"), "model": MODEL.to_dict(), "train": asdict(config),
            "device": "cpu", "checkpoint_dir": str(tmp / name), "work_dir": str(tmp / "work"), "extra": {"test": name}}
    (tmp / f"{name}.json").write_text(json.dumps(spec))
    done = torchrun("-m", "swapline.ddp_worker", str(tmp / f"{name}.json"))
    return {rank: "\n".join(re.findall(rf"^\[rank {rank}\] (.*)$", done.stderr, re.M)) for rank in (0, 1)}


def stop(logs: dict[int, str]) -> tuple[int, str]:
    """(step, reason) where both ranks stopped: they must agree."""
    found = [re.findall(r"stopped at step (\d+) by (\w+)", logs[rank]) for rank in (0, 1)]
    assert len(found[0]) == 1 and found[0] == found[1], found
    return int(found[0][0][0]), found[0][0][1]


def test_rank_0_alone_writes_checkpoints_and_a_second_launch_resumes(tmp_path):
    from swapline.ops.checkpoint import read_state

    logs = launch(tmp_path, "first", iterations=4, checkpoint_every_steps=2)
    assert "saved checkpoint at step 2" in logs[0] and "saved checkpoint at step 4" in logs[0]
    assert "saved checkpoint" not in logs[1] and stop(logs) == (4, "iterations")
    first = read_state(tmp_path / "first")
    assert first["step"] == 4 and first["extra"]["world_size"] == 2 and first["extra"]["test"] == "first"
    # Every rank's augmentation stream is in it, beside the shared sampling generator.
    assert {"train", "augment.0", "augment.1"} <= set(first["rng"]["generators"])

    logs = launch(tmp_path, "second", iterations=6)  # the work checkpoint of step 4 is the resume point
    second = read_state(tmp_path / "second")
    assert second["step"] == 6 and stop(logs) == (6, "iterations")
    assert [(r["start_step"], r["step"], r["world_size"]) for r in second["extra"]["runs"]] == [(0, 4, 2), (4, 6, 2)]
    assert [s for s, _, _ in second["extra"]["losses"]] == [2, 4, 6]


def test_time_budget_and_target_loss_stop_every_rank_at_the_same_step(tmp_path):
    step, reason = stop(launch(tmp_path, "budget", iterations=100000, max_seconds=2.0, log_every=1000))
    assert reason == "time" and step > 0
    # Resumed from that step; any loss is below 10, so the first log step stops it.
    assert stop(launch(tmp_path, "target", iterations=100000, target_loss=10.0, log_every=3)) == ((step // 3 + 1) * 3, "target_loss")


if __name__ == "__main__" and sys.argv[1:2] == ["equivalence"]:
    _equivalence_rank(sys.argv[2])
