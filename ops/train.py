"""The training loop of the shared-encoder autoencoder.

Faces arrive as aligned uint8 crops (N,S,S,3), usually memory-mapped (ops.trainset), with the
rows to train on (`index_*`: the held-out faces stay out without copying the faceset); the
rows are read a chunk at a time, resized once to the model resolution and kept as uint8 on
the training device (N*R*R*4 bytes with masks: 300 MB for 4,600 faces at 128 px); each step samples a batch per side, augments it
there (augment.py), runs the shared encoder on both sides at once and each side's decoder,
and takes one Adam step on the sum of both sides' losses (loss.py).

All randomness of a run (batch indices, augmentation) comes from one CPU generator seeded
from TrainConfig.seed and saved in every checkpoint, so a resumed run continues with exactly
the batches an uninterrupted one would have drawn. Work checkpoints go to `work_dir`
(workdir.py), outside the artifact being built, so a crash loses at most one interval.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from swapline.ops import interrupts
from swapline.ops.augment import augment_pair
from swapline.ops.checkpoint import CheckpointError, load_checkpoint, read_state, read_weights, restore_rng, save_checkpoint
from swapline.ops.inference import device_setup, images_to_device, load_for_inference, preview_grid, swap_batch  # noqa: F401 (re-exported)
from swapline.ops.loss import side_loss
from swapline.ops.model import SIDES, FaceSwapAE, ModelConfig
from swapline.ops.train_config import TrainConfig  # noqa: F401 (re-exported)
from swapline.ops.trainset import rows_max, rows_to_device, take
from swapline.ops.workdir import latest_checkpoint, save_work_checkpoint

logger = logging.getLogger(__name__)

GENERATOR = "train"  # the name of the run's generator in the checkpoint
StoppedBy = Literal["iterations", "time", "target_loss", "interrupted"]


@dataclass
class TrainResult:
    step: int
    start_step: int
    losses: list[tuple[int, float, float]]  # (step, loss_a, loss_b), each a mean since the last entry
    final_loss_a: float
    final_loss_b: float
    seconds: float
    checkpoint_dir: Path
    preview: np.ndarray | None = field(default=None, repr=False)  # the last preview grid, if any
    stopped_by: StoppedBy = "iterations"
    resumed_from: Path | None = None
    history: list[tuple[int, float, float]] = field(default_factory=list)  # losses of every run that led here
    runs: list[dict[str, Any]] = field(default_factory=list)  # each run: start_step, step, stopped_by, seconds, ended


# ---------------------------------------------------------------- data and one step

def _side_data(faces: np.ndarray, masks: np.ndarray | None, resolution: int, device: torch.device,
               index: np.ndarray | None = None):
    index = np.arange(len(faces)) if index is None else np.asarray(index)
    if faces.ndim == 4 and faces.shape[1:] == (3, resolution, resolution) and faces.dtype == np.uint8 and len(index):
        return _resized_rows(faces, index, device), None if masks is None else _resized_rows(masks, index, device)
    if faces.ndim != 4 or faces.shape[-1] != 3 or faces.dtype != np.uint8 or len(index) == 0:
        raise ValueError(f"faces must be a non-empty uint8 array (N,S,S,3), got {faces.dtype} {faces.shape}, {len(index)} rows")
    if masks is not None and masks.shape != faces.shape[:3]:
        raise ValueError(f"masks must be (N,S,S) matching faces {faces.shape[:3]}, got {masks.shape}")
    rgb = rows_to_device(faces, index, resolution, device)  # (N,3,R,R) uint8
    # Masks may be uint8 0..255, or 0/1 (bool, float, or uint8 that never exceeds 1).
    scale = 1.0 if masks is not None and masks.dtype == np.uint8 and rows_max(masks, index) > 1 else 255.0
    mask = None if masks is None else rows_to_device(masks, index, resolution, device, scale)  # (N,1,R,R)
    return rgb, mask


def _resized_rows(array: np.ndarray, index: np.ndarray, device: torch.device) -> torch.Tensor:
    """Rows of an array already at model resolution (trainset.at_resolution: (N,C,R,R) uint8
    0..255) onto the device, a chunk at a time."""
    out = torch.empty((len(index), *array.shape[1:]), dtype=torch.uint8, device=device)
    for i in range(0, len(index), 256):
        out[i : i + 256] = torch.from_numpy(take(array, index[i : i + 256])).to(device)
    return out


def _sample(rgb: torch.Tensor, mask: torch.Tensor | None, batch: int, generator: torch.Generator):
    """A random batch as float in [0,1]: rgb (B,3,R,R), mask (B,1,R,R) (ones when no masks)."""
    idx = torch.randint(len(rgb), (batch,), generator=generator).to(rgb.device)
    x = rgb[idx].float() / 255.0
    m = mask[idx].float() / 255.0 if mask is not None else torch.ones_like(x[:, :1])
    return x, m


def _train_step(model, optimizer, data, config: TrainConfig, generator, fmt, autocast) -> torch.Tensor:
    """One Adam step on both sides; returns the detached (loss_a, loss_b) as a (2,) tensor."""
    batches = [augment_pair(*_sample(*data[s], config.batch_size, generator), config.warp_strength, generator) for s in SIDES]
    warped = torch.cat([b[0] for b in batches]).contiguous(memory_format=fmt)  # (2B,3,R,R)
    with autocast():
        latents = model.encode(warped).split(config.batch_size)  # 2 x (B,U,8,8)
        outputs = [model.decode(z, s) for z, s in zip(latents, SIDES)]
    # Losses in fp32, outside autocast.
    losses = torch.stack([side_loss(rgb.float(), m.float(), t_rgb, t_m, config.loss, config.mask_weight, config.ssim_weight)
                          for (rgb, m), (_, t_rgb, t_m) in zip(outputs, batches)])
    optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    optimizer.step()
    return losses.detach()


# ---------------------------------------------------------------- set-up

def _build(model_config: ModelConfig, config: TrainConfig, device: torch.device, fmt):
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(config.seed)
        model = FaceSwapAE(model_config)
    model = model.to(device, memory_format=fmt)
    # The classic betas (0.5, 0.999); fused Adam on CUDA saves a kernel launch per tensor.
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.5, 0.999),
                                 fused=device.type == "cuda" or None)
    generator = torch.Generator().manual_seed(config.seed)
    return model, optimizer, generator


def warm_start(model: FaceSwapAE, parent_checkpoint_dir: Path, what: str = "encoder") -> list[str]:
    """Copy the encoder ("encoder") or every weight ("all") of a parent swap's checkpoint into
    `model`; returns the keys copied. The parent must have the same architecture for them."""
    if what not in ("encoder", "all"):
        raise ValueError(f"warm start copies 'encoder' or 'all', got {what!r}")
    weights = read_weights(Path(parent_checkpoint_dir))
    own = model.state_dict()
    take = {k: v for k, v in weights.items() if what == "all" or k.startswith("encoder.")}
    misfits = [k for k, v in take.items() if k not in own or own[k].shape != v.shape]
    if misfits or not take:
        raise CheckpointError(f"{parent_checkpoint_dir}: parent weights do not fit this model "
                              f"(same resolution and preset needed): {misfits[:3] or 'no encoder weights'}")
    model.load_state_dict(take, strict=False)
    logger.info("warm start: %d tensors (%s) from %s", len(take), what, parent_checkpoint_dir)
    return sorted(take)


def _resume_point(resume_from: Path | None, work_dir: Path | None, model_config: ModelConfig) -> Path | None:
    """resume_from when given, else the newest loadable work checkpoint of the same model."""
    if resume_from is not None:
        return Path(resume_from)
    latest = latest_checkpoint(work_dir)
    if latest is not None and read_state(latest).get("config", {}).get("model") != model_config.to_dict():
        logger.warning("%s was trained with another model config; starting fresh", latest)
        return None
    return latest


def _resume(folder: Path, model, optimizer, generator, model_config: ModelConfig, device) -> dict[str, Any]:
    saved = read_state(folder).get("config", {}).get("model")
    if saved != model_config.to_dict():
        raise CheckpointError(f"{folder}: trained as {saved}, cannot resume as {model_config.to_dict()}")
    state = load_checkpoint(folder, model, optimizer, map_location=device)
    restore_rng(state, {GENERATOR: generator})
    return state


# ---------------------------------------------------------------- the loop

def train(
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
    """Train until step == iterations (counting a resumed checkpoint's steps), max_seconds
    have passed or target_loss is reached, whichever comes first. Resumes from `resume_from`,
    else from the newest work checkpoint in `work_dir`; a fresh run may warm-start from
    `warm_from` (a parent's checkpoint). Saves work checkpoints into `work_dir` every
    checkpoint_minutes / checkpoint_every_steps and at the end, and the final one also into
    `checkpoint_dir`. `extra` (JSON, e.g. the data versions trained on) goes into each.
    `index_a`/`index_b`: the rows of faces_*/masks_* to train on (default all)."""
    started, dev, cfg = time.monotonic(), torch.device(device), train_config
    fmt, autocast = device_setup(dev)
    data = {"a": _side_data(faces_a, masks_a, model_config.resolution, dev, index_a),
            "b": _side_data(faces_b, masks_b, model_config.resolution, dev, index_b)}
    # Preview faces (training rows only), copied once: a preview never reads the faceset again.
    faces_a, faces_b = (take(f, np.arange(min(4, len(f))) if i is None else np.asarray(i)[:4])
                        for f, i in ((faces_a, index_a), (faces_b, index_b)))
    model, optimizer, generator = _build(model_config, cfg, dev, fmt)
    step, history, runs = 0, [], []
    if (source := _resume_point(resume_from, work_dir, model_config)) is not None:
        state = _resume(source, model, optimizer, generator, model_config, dev)
        step, history, runs = state["step"], [tuple(x) for x in state["extra"].get("losses", [])], _earlier_runs(state)
    elif warm_from is not None:
        warm_start(model, warm_from, warm_what)
    if cfg.compile and dev.type == "cuda":
        model.encoder.compile()  # in place: state_dict keys stay unprefixed for checkpoints
        for decoder in model.decoders.values():
            decoder.compile()
    start_step, losses, preview = step, [], None
    stopped_by: StoppedBy | str = "running"  # as recorded in a checkpoint taken mid-run

    def this_run() -> dict[str, Any]:
        return {"start_step": start_step, "step": step, "stopped_by": stopped_by,
                "seconds": round(time.monotonic() - started, 1), "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def save(folder: Path) -> Path:
        config = {"model": model_config.to_dict(), "train": asdict(cfg)}
        return save_checkpoint(folder, model, optimizer, step, config,
                               {**(extra or {}), "losses": history + losses, "runs": runs + [this_run()]},
                               generators={GENERATOR: generator})

    logger.info("training %s from step %d to %d on %s", model_config, step, cfg.iterations, dev)
    acc, last = torch.zeros(2, device=dev), {"t": time.monotonic(), "step": step, "save": time.monotonic(), "preview": step}
    with interrupts.deferred() as interrupted:  # a signal waits for the step boundary
        while step < cfg.iterations:
            acc += _train_step(model, optimizer, data, cfg, generator, fmt, autocast)
            step += 1
            out_of_time = cfg.max_seconds is not None and time.monotonic() - started >= cfg.max_seconds
            if step % cfg.log_every == 0 or step == cfg.iterations or out_of_time or interrupted():
                mean = (acc / (step - last["step"])).tolist()  # the one host sync per log interval
                acc.zero_()
                losses.append((step, mean[0], mean[1]))
                grid = _report(progress, model, faces_a, faces_b, cfg, step, mean, last, dev, started)
                preview = grid if grid is not None else preview
                if cfg.target_loss is not None and max(mean) <= cfg.target_loss:
                    stopped_by = "target_loss"
                    break
            if out_of_time or interrupted():
                stopped_by = "time" if out_of_time else "interrupted"
                break
            if _checkpoint_due(cfg, step, last):
                if work_dir is not None:
                    save_work_checkpoint(Path(work_dir), step, save)
                else:
                    save(Path(checkpoint_dir))
                last["save"] = time.monotonic()
        stopped_by = "iterations" if stopped_by == "running" else stopped_by
        if work_dir is not None:
            save_work_checkpoint(Path(work_dir), step, save)
    if stopped_by == "interrupted":
        if work_dir is None:
            save(Path(checkpoint_dir))
        raise interrupts.Interrupted(f"training interrupted at step {step}; its work checkpoint is saved and the next run resumes from it")
    save(Path(checkpoint_dir))
    logger.info("stopped at step %d by %s", step, stopped_by)
    final = (losses or history or [(step, math.nan, math.nan)])[-1]
    return TrainResult(step, start_step, losses, final[1], final[2], time.monotonic() - started, Path(checkpoint_dir),
                       preview, stopped_by, source, history=history + losses, runs=runs + [this_run()])


def _earlier_runs(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs that trained a checkpoint before this one. A run recorded as still "running"
    never finished: it was killed or crashed after that checkpoint."""
    runs = [dict(run) for run in state["extra"].get("runs", [])]
    for run in runs:
        if run["stopped_by"] == "running":
            run["stopped_by"] = "killed or crashed"
    return runs


def _checkpoint_due(cfg: TrainConfig, step: int, last: dict) -> bool:
    by_steps = cfg.checkpoint_every_steps > 0 and step % cfg.checkpoint_every_steps == 0
    by_time = cfg.checkpoint_minutes > 0 and time.monotonic() - last["save"] >= cfg.checkpoint_minutes * 60
    return (by_steps or by_time) and step < cfg.iterations  # the end save follows anyway


def _report(progress, model, faces_a, faces_b, cfg: TrainConfig, step, mean, last, device, started) -> np.ndarray | None:
    """Log and call progress() for one log interval; returns a preview grid when one is due."""
    now = time.monotonic()
    steps_per_s = (step - last["step"]) / max(now - last["t"], 1e-9)
    last.update(t=now, step=step)
    eta = (cfg.iterations - step) / steps_per_s
    if cfg.max_seconds is not None:  # the budget may end the run before the iterations do
        eta = min(eta, max(0.0, cfg.max_seconds - (now - started)))
    info = {"step": step, "iterations": cfg.iterations, "loss_a": mean[0], "loss_b": mean[1],
            "images_per_s": steps_per_s * 2 * cfg.batch_size, "eta_s": eta}
    logger.info("step %d/%d loss_a %.4f loss_b %.4f %.0f img/s ETA %.0fs", step, cfg.iterations, mean[0], mean[1],
                info["images_per_s"], eta)
    grid = None
    if cfg.preview_every > 0 and step - last["preview"] >= cfg.preview_every:
        grid = info["preview"] = preview_grid(model, faces_a, faces_b, device=device)
        last["preview"] = step
    if progress is not None:
        progress(info)
    return grid
