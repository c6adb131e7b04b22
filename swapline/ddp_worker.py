"""torchrun's entry point for data-parallel training (ops/distributed.py):

    python -m torch.distributed.run --standalone --nproc-per-node N -m swapline.ddp_worker spec.json

spec.json (written by assets/train.py) holds what ops.train.train() takes: the faces (faceset
folders, "faceset_a"/"faceset_b", read through their decoded cache; or .npy arrays,
"faces_a"/"masks_a"/..., for tests and benchmarks), the rows to train on ("rows_a"/"rows_b",
default all), "model" (ModelConfig) and "train" (TrainConfig) settings, "device", and the
"checkpoint_dir", "work_dir", "resume_from", "warm_from"/"warm_what" and "extra" of the call.

Every rank trains. Rank 0 alone opens Dagster Pipes (a second writer would interleave its
messages with ours): warnings and progress lines reach the asset's run log, the result comes
back as a custom message and its summary as the materialization's metadata. Every rank logs
to stderr with its rank in front. Run outside Dagster, Pipes is a no-op (it warns once).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)
PROGRESS_EVERY_S = 10.0  # a line every ~10 s is enough to watch; the loss curve keeps every point


class _ToPipes(logging.Handler):
    """swapline's warnings and errors on rank 0 -> the asset's run log."""

    def __init__(self, pipes: Any):
        super().__init__(logging.WARNING)
        self.pipes = pipes

    def emit(self, record: logging.LogRecord) -> None:
        (self.pipes.log.error if record.levelno >= logging.ERROR else self.pipes.log.warning)(self.format(record))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    # record(): a rank's traceback reaches torchrun's failure summary, not only its stderr.
    from torch.distributed.elastic.multiprocessing.errors import record

    from swapline.ops.interrupts import Interrupted

    try:
        record(_run)(json.loads(Path(args[0]).read_text()))
    except Interrupted as exc:  # a stop request, not a failure: its work checkpoint is saved
        logger.warning("%s", exc)
        return 130
    return 0


def _run(spec: dict[str, Any]) -> None:
    from swapline.ops.distributed import backend_for, process_group

    backend = spec["train"].get("ddp_backend", "auto")
    with process_group(spec["device"], backend) as (rank, world, device):
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                            format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s")
        if rank != 0:
            _train(spec, device, None)
            return
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes() as pipes:
            logging.getLogger("swapline").addHandler(_ToPipes(pipes))
            rate: dict[str, float] = {}
            pipes.log.info(f"training on {world} ranks ({backend_for(device, backend)}, {device.split(':')[0]})")
            result = _train(spec, device, _progress(pipes, rate))
            batch = spec["train"]["batch_size"]
            summary = {"world_size": world, "ddp_backend": backend_for(device, backend), "global_batch": batch,
                       "per_rank_batch": batch // world, "faces_per_s": round(rate.get("faces_per_s", 0.0), 1)}
            pipes.report_custom_message({**summary, **_result_json(result)})
            pipes.report_asset_materialization(metadata=summary)


def _progress(pipes: Any, rate: dict[str, float]) -> Callable[[dict[str, Any]], None]:
    shown = [0.0]

    def report(p: dict[str, Any]) -> None:
        rate["faces_per_s"] = p["images_per_s"]  # both sides, all ranks: the global batch's faces
        if time.monotonic() - shown[0] < PROGRESS_EVERY_S and p["step"] < p["iterations"]:
            return
        shown[0] = time.monotonic()
        pipes.log.info(f"step {p['step']}/{p['iterations']} loss A {p['loss_a']:.4f} B {p['loss_b']:.4f} "
                       f"{p['images_per_s']:.0f} img/s ETA {p['eta_s']:.0f}s")

    return report


def _result_json(result: Any) -> dict[str, Any]:
    """A TrainResult as JSON, minus the preview image (the asset renders its own)."""
    return {"step": result.step, "start_step": result.start_step, "losses": result.losses,
            "final_loss_a": result.final_loss_a, "final_loss_b": result.final_loss_b, "seconds": result.seconds,
            "checkpoint_dir": str(result.checkpoint_dir), "stopped_by": result.stopped_by,
            "resumed_from": None if result.resumed_from is None else str(result.resumed_from),
            "history": result.history, "runs": result.runs}


def _arrays(spec: dict[str, Any], side: str, resolution: int):
    """(faces, masks) of one side: a faceset's arrays at the model resolution, or .npy files."""
    import numpy as np

    if spec.get(f"faceset_{side}"):
        from swapline.ops.trainset import at_resolution, open_faceset

        return at_resolution(open_faceset(Path(spec[f"faceset_{side}"])), resolution)
    masks = spec.get(f"masks_{side}")
    return np.load(spec[f"faces_{side}"], mmap_mode="r"), None if masks is None else np.load(masks, mmap_mode="r")


def _train(spec: dict[str, Any], device: str, progress: Callable[[dict[str, Any]], None] | None):
    import numpy as np

    from swapline.ops.distributed import train_ddp
    from swapline.ops.model import ModelConfig
    from swapline.ops.train_config import TrainConfig

    model = ModelConfig(**spec["model"])
    (faces_a, masks_a), (faces_b, masks_b) = (_arrays(spec, side, model.resolution) for side in ("a", "b"))

    def path(key: str) -> Path | None:
        return Path(spec[key]) if spec.get(key) else None

    def rows(side: str) -> np.ndarray | None:
        return None if spec.get(f"rows_{side}") is None else np.asarray(spec[f"rows_{side}"], dtype=np.int64)

    return train_ddp(faces_a, faces_b, masks_a, masks_b, model, TrainConfig(**spec["train"]), device,
                     resume_from=path("resume_from"), checkpoint_dir=Path(spec["checkpoint_dir"]), work_dir=path("work_dir"),
                     warm_from=path("warm_from"), warm_what=spec.get("warm_what", "encoder"), extra=spec.get("extra"),
                     progress=progress, index_a=rows("a"), index_b=rows("b"))


if __name__ == "__main__":
    sys.exit(main())
