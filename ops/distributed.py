"""Data-parallel training (DDP): train.py's loop, one process per GPU, started by torchrun.

Each process (swapline/ddp_worker.py) joins the process group (`process_group`) and calls
`train_ddp`, which takes train()'s arguments and returns its TrainResult. A world size of 1
never comes here: the asset calls train() in-process, so one-GPU training is unchanged.

Batch. TrainConfig.batch_size stays the GLOBAL batch per side and step: every rank draws the
same global row indices from its copy of the shared "train" generator (seed) and trains on
its 1/W slice; DDP averages the gradients in backward(). A step sees as many faces on one GPU
as on eight, the learning rate needs no rescaling, and a checkpoint resumes on any world size
with its step meaning the same: `gpus` is a speed-only setting, outside the code version.
Equivalent, not bitwise equal, to one process: each rank augments with its own generator
(seed + rank), and the masked reconstruction term is normalised by each shard's mask area
rather than the whole batch's (the same when masks are uniform; tests/ops/test_ddp.py checks
the parameters against one process on such a batch). To keep the per-GPU batch while adding
GPUs, raise batch_size with them: that changes results, and the code version, honestly.

Stops. Rank 0's clock alone decides the time budget and timed checkpoints: after every step
one MAX all-reduce of three flags [time up, a signal arrived on any rank, checkpoint due]
over a gloo group (CPU tensors: no GPU sync) makes all ranks stop or save after the same
step. The logged loss is all-reduced and rank 0's copy broadcast, so the target-loss stop
is one decision too.

Checkpoints. Rank 0 alone writes them, atomically, where train() does (work checkpoints in
work_dir, the final one in checkpoint_dir); the augmentation generators of all ranks are
gathered into it, so a resume on the same world size continues every rank's stream.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from swapline.ops import interrupts
from swapline.ops.augment import augment_pair
from swapline.ops.checkpoint import restore_rng, save_checkpoint
from swapline.ops.inference import device_setup
from swapline.ops.loss import side_loss
from swapline.ops.model import SIDES, FaceSwapAE, ModelConfig
from swapline.ops.train import (
    GENERATOR,
    StoppedBy,
    TrainConfig,
    TrainResult,
    _build,
    _checkpoint_due,
    _earlier_runs,
    _report,
    _resume,
    _resume_point,
    _side_data,
    warm_start,
)
from swapline.ops.trainset import take
from swapline.ops.workdir import save_work_checkpoint

logger = logging.getLogger(__name__)

Batches = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # per side: warped, target rgb, target mask


class PairForward(nn.Module):
    """Both sides in one forward: A and B through the shared encoder, each through its own
    decoder. DDP all-reduces the gradients of the parameters its forward used; a decoder run
    outside it would go unsynchronised (or need find_unused_parameters, a graph walk a step)."""

    def __init__(self, model: FaceSwapAE):
        super().__init__()
        self.model = model

    def forward(self, warped_a: torch.Tensor, warped_b: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """warped_a, warped_b (b,3,R,R) -> [(rgb, mask) of decoder a on A, of decoder b on B], (b,3,R,R), (b,1,R,R)"""
        latents = self.model.encode(torch.cat([warped_a, warped_b])).split(len(warped_a))  # 2 x (b,U,8,8)
        return [self.model.decode(z, side) for z, side in zip(latents, SIDES)]


def update(net: nn.Module, optimizer: torch.optim.Optimizer, batches: Batches, config: TrainConfig, fmt, autocast) -> torch.Tensor:
    """One optimizer step on this rank's batches (DDP averages the gradients across ranks in
    backward()); returns the detached (loss_a, loss_b) as a (2,) tensor."""
    with autocast():
        outputs = net(*(warped.contiguous(memory_format=fmt) for warped, _, _ in batches))
    # Losses in fp32, outside autocast, as train.py does.
    losses = torch.stack([side_loss(rgb.float(), m.float(), t_rgb, t_m, config.loss, config.mask_weight, config.ssim_weight)
                          for (rgb, m), (_, t_rgb, t_m) in zip(outputs, batches)])
    optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    optimizer.step()
    return losses.detach()


def shard_rows(n: int, global_batch: int, generator: torch.Generator, rank: int, world: int) -> torch.Tensor:
    """This rank's slice (global_batch / world,) of the step's global batch of row indices in
    [0, n): every rank draws the whole batch, so the shared generators stay in step."""
    per = global_batch // world
    return torch.randint(n, (global_batch,), generator=generator)[rank * per : (rank + 1) * per]


def rank_batches(data: dict, config: TrainConfig, sampler: torch.Generator, augmenter: torch.Generator, rank: int, world: int) -> Batches:
    """This rank's share of a step: its rows of each side's global batch, augmented by its own generator."""
    out = []
    for side in SIDES:
        rgb, mask = data[side]  # (N,3,R,R), (N,1,R,R) or None, uint8 on the device
        idx = shard_rows(len(rgb), config.batch_size, sampler, rank, world).to(rgb.device)
        x = rgb[idx].float() / 255.0  # (b,3,R,R)
        m = mask[idx].float() / 255.0 if mask is not None else torch.ones_like(x[:, :1])  # (b,1,R,R)
        out.append(augment_pair(x, m, config.warp_strength, augmenter))
    return out


# ---------------------------------------------------------------- the process group

def backend_for(device: str, backend: str = "auto") -> str:
    return ("nccl" if device.startswith("cuda") else "gloo") if backend == "auto" else backend


@contextmanager
def process_group(device: str, backend: str = "auto") -> Iterator[tuple[int, int, str]]:
    """Join torchrun's process group (its env: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT);
    yields (rank, world size, this rank's device: cuda:LOCAL_RANK on GPUs, whatever "cuda:N"
    asked for (pick GPUs with CUDA_VISIBLE_DEVICES), else `device`)."""
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)  # NCCL and the default CUDA stream follow this rank's GPU
    dist.init_process_group(backend_for(device, backend))
    try:
        yield dist.get_rank(), dist.get_world_size(), device
    finally:
        dist.destroy_process_group()


def agree(flags: list[bool], group) -> list[bool]:
    """Every rank's flags -> the MAX over ranks, the same list on each."""
    both = torch.tensor(flags, dtype=torch.int32)  # CPU: the gloo group, no GPU sync
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    return [bool(v) for v in both.tolist()]


def _mean_loss(acc: torch.Tensor, steps: int, world: int) -> list[float]:
    """This rank's summed (2,) losses -> the mean over steps and ranks, rank 0's copy everywhere."""
    total = acc.clone()
    dist.all_reduce(total)  # SUM: gloo has no AVG
    dist.broadcast(total, src=0)  # one value decides the target-loss stop on every rank
    return (total / (steps * world)).tolist()  # the one host sync per log interval


def _gather(generator: torch.Generator, group) -> list[torch.Generator]:
    """The augmentation generator of every rank, by rank (a CPU state: a fixed-size uint8 tensor)."""
    state = generator.get_state()
    states = [torch.empty_like(state) for _ in range(dist.get_world_size())]
    dist.all_gather(states, state, group=group)
    out = [torch.Generator() for _ in states]
    for g, s in zip(out, states):
        g.set_state(s)
    return out


def _augmenter(config: TrainConfig, rank: int, world: int, state: dict[str, Any] | None) -> torch.Generator:
    """This rank's augmentation generator: seed + rank on a fresh run; the saved stream on a
    resume by the same world size; else (a one-process or other-size checkpoint) a new stream
    per rank and step."""
    generator = torch.Generator()
    if state is None:
        return generator.manual_seed(config.seed + rank)
    name = f"augment.{rank}"
    if state["extra"].get("world_size") == world and name in state["rng"]["generators"]:
        restore_rng(state, {name: generator})
        return generator
    return generator.manual_seed(config.seed + rank + world * state["step"])


# ---------------------------------------------------------------- the loop

def train_ddp(
    faces_a: np.ndarray,
    faces_b: np.ndarray,
    masks_a: np.ndarray | None,
    masks_b: np.ndarray | None,
    model_config: ModelConfig,
    train_config: TrainConfig,
    device: str,
    *,
    resume_from: Path | None = None,
    checkpoint_dir: Path,
    work_dir: Path | None = None,
    warm_from: Path | None = None,
    warm_what: str = "encoder",
    extra: dict[str, Any] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    index_a: np.ndarray | None = None,
    index_b: np.ndarray | None = None,
) -> TrainResult:
    """train() on every rank of the process group (see the module notes); the same arguments,
    the same stops and checkpoints. Every rank returns the result; progress() runs on rank 0."""
    started, dev, cfg = time.monotonic(), torch.device(device), train_config
    rank, world = dist.get_rank(), dist.get_world_size()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} does not split into {world} equal shards")
    control = dist.new_group(backend="gloo")  # flags and generator states as CPU tensors
    fmt, autocast = device_setup(dev)
    data = {"a": _side_data(faces_a, masks_a, model_config.resolution, dev, index_a),
            "b": _side_data(faces_b, masks_b, model_config.resolution, dev, index_b)}
    faces_a, faces_b = (take(f, np.arange(min(4, len(f))) if i is None else np.asarray(i)[:4])
                        for f, i in ((faces_a, index_a), (faces_b, index_b)))
    model, optimizer, sampler = _build(model_config, cfg, dev, fmt)
    step, history, runs, state = 0, [], [], None
    if (source := _resume_point(resume_from, work_dir, model_config)) is not None:
        state = _resume(source, model, optimizer, sampler, model_config, dev)
        step, history, runs = state["step"], [tuple(x) for x in state["extra"].get("losses", [])], _earlier_runs(state)
    elif warm_from is not None:
        warm_start(model, warm_from, warm_what)
    augmenter = _augmenter(cfg, rank, world, state)
    if cfg.compile and dev.type == "cuda":
        model.encoder.compile()  # in place, as train() does: checkpoint keys stay unprefixed
        for decoder in model.decoders.values():
            decoder.compile()
    # DDP broadcasts rank 0's weights at construction (the model has no buffers to sync later).
    net = nn.parallel.DistributedDataParallel(PairForward(model), device_ids=[dev.index] if dev.type == "cuda" else None,
                                              gradient_as_bucket_view=True)
    start_step, losses, preview = step, [], None
    stopped_by: StoppedBy | str = "running"

    def this_run() -> dict[str, Any]:
        return {"start_step": start_step, "step": step, "stopped_by": stopped_by, "world_size": world,
                "seconds": round(time.monotonic() - started, 1), "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def save(final: bool) -> None:
        """Collective: every rank hands over its generator; rank 0 writes the checkpoint."""
        generators = {GENERATOR: sampler, **{f"augment.{r}": g for r, g in enumerate(_gather(augmenter, control))}}
        if rank != 0:
            return
        config = {"model": model_config.to_dict(), "train": asdict(cfg)}
        run = {**(extra or {}), "world_size": world, "losses": history + losses, "runs": runs + [this_run()]}

        def write(folder: Path) -> Path:
            return save_checkpoint(folder, model, optimizer, step, config, run, generators=generators)

        if final or work_dir is None:
            write(Path(checkpoint_dir))
        else:
            save_work_checkpoint(Path(work_dir), step, write)

    if rank == 0:
        logger.info("training %s from step %d to %d on %d ranks (%s), %d faces per rank and side a step",
                    model_config, step, cfg.iterations, world, dev.type, cfg.batch_size // world)
    acc, last = torch.zeros(2, device=dev), {"t": time.monotonic(), "step": step, "save": time.monotonic(), "preview": step}
    with interrupts.deferred() as interrupted:  # a signal waits for the step boundary
        while step < cfg.iterations:
            acc += update(net, optimizer, rank_batches(data, cfg, sampler, augmenter, rank, world), cfg, fmt, autocast)
            step += 1
            lead = rank == 0  # rank 0's clock decides; the others raise only the signal flag
            budget_spent = cfg.max_seconds is not None and time.monotonic() - started >= cfg.max_seconds
            out_of_time, signal, save_due = agree([lead and budget_spent, interrupted(), lead and _checkpoint_due(cfg, step, last)],
                                                   control)
            if step % cfg.log_every == 0 or step == cfg.iterations or out_of_time or signal:
                mean = _mean_loss(acc, step - last["step"], world)
                acc.zero_()
                losses.append((step, mean[0], mean[1]))
                if lead:
                    grid = _report(progress, model, faces_a, faces_b, cfg, step, mean, last, dev, started)
                    preview = grid if grid is not None else preview
                last["step"] = step
                if cfg.target_loss is not None and max(mean) <= cfg.target_loss:
                    stopped_by = "target_loss"
                    break
            if out_of_time or signal:
                stopped_by = "time" if out_of_time else "interrupted"
                break
            if save_due:
                save(final=False)
                last["save"] = time.monotonic()
        stopped_by = "iterations" if stopped_by == "running" else stopped_by
        if work_dir is not None:
            save(final=False)
    if stopped_by == "interrupted":
        if work_dir is None:
            save(final=True)
        raise interrupts.Interrupted(f"training interrupted at step {step}; its work checkpoint is saved and the next run resumes from it")
    save(final=True)
    logger.info("stopped at step %d by %s", step, stopped_by)  # on every rank: they must agree
    final = (losses or history or [(step, math.nan, math.nan)])[-1]
    return TrainResult(step, start_step, losses, final[1], final[2], time.monotonic() - started, Path(checkpoint_dir),
                       preview, stopped_by, source, history=history + losses, runs=runs + [this_run()])
