"""train: one model per swap, a shared encoder with a decoder per identity.

One GPU (the swap's `gpus: 1`, the default) trains in this process (ops/train.py). More train
data-parallel: torchrun starts one process per GPU (swapline/ddp_worker.py, ops/distributed.py)
through Dagster Pipes; rank 0's log lines reach this run and its report becomes the metadata.
"""


import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dagster as dg

from swapline.assets.common import ConsentLive, FacesetsNotBlocked, code_version, image_md, on_change, own_location
from swapline.executors import GPU_OP_TAGS
from swapline.ops.consent import require_live_consent
from swapline.ops.storage import Published, write_manifest
from swapline.ops.train_config import TrainConfig
from swapline.project import Project
from swapline.quality_checks.faceset_checks import failed_blocking_checks
from swapline.quality_checks.model_checks import evaluate_model, model_check_specs
from swapline.resources.analyzer import FaceAnalyzerResource
from swapline.resources.device import TorchDevice
from swapline.resources.storage import StorageResource, artifact_input, artifact_metadata, recorded


def face_model_asset(project: Project, name: str) -> dg.AssetsDefinition:
    swap = project.swaps[name]
    model_settings = {"resolution": swap.resolution, "preset": swap.preset}
    key = dg.AssetKey([name, "face_model"])
    consents = {who: project.identities[who].consent for who in (swap.a, swap.b)}
    ins = {"faceset_a": artifact_input(dg.AssetKey([swap.a, "faceset"])), "faceset_b": artifact_input(dg.AssetKey([swap.b, "faceset"]))}
    if swap.parent:  # a parent's model is an input when this swap starts fresh (warm start), so it comes first
        ins["parent"] = artifact_input(dg.AssetKey([swap.parent, "face_model"]))

    @dg.asset(
        key=key,
        ins=ins,
        group_name="train",
        pool="gpu",  # two trainings never share one GPU
        op_tags=GPU_OP_TAGS,  # with Celery: the `gpu` queue (swapline/executors.py); other executors ignore it
        code_version=code_version("face_model", {**model_settings, "iterations": swap.iterations, "batch": swap.batch_size,
                                                 "loss": [swap.loss, swap.ssim_weight, swap.mask_weight]}),
        kinds={"pytorch"},
        check_specs=model_check_specs(key),
        automation_condition=on_change() & FacesetsNotBlocked() & ConsentLive(consents),
    )
    def face_model(context: dg.AssetExecutionContext, storage: StorageResource, torch_device: TorchDevice,
                   face_analyzer: FaceAnalyzerResource, **inputs: Published) -> dg.MaterializeResult:
        """The swap model: one shared encoder and one decoder per identity, trained with random-warp
        augmentation on both facesets minus a 5% hold-out. Resumes from its last checkpoint
        (safetensors weights, optimizer state, step). Evidence on the held-out faces: reconstruction
        SSIM/PSNR, identity transfer (share of swaps closer to the other person's embedding
        centroid), pose preservation; the preview shows A, A→A, A→B, B, B→B, B→A."""
        from swapline.ops.evaluate import evaluate
        from swapline.ops.model import ModelConfig
        from swapline.ops.train import train
        from swapline.ops.trainset import at_resolution, open_faceset

        require_live_consent(consents, action=f"train {name}")
        _refuse_failed_facesets(context.instance, name, (swap.a, swap.b))
        store = storage.store()
        sets = {side: inputs[f"faceset_{side}"] for side in ("a", "b")}  # the versions Dagster recorded
        trained_on = {side: published.version for side, published in sets.items()}
        previous = recorded(context.instance, key, None)  # this model's own last materialization
        prev = previous.manifest() if previous and previous.path.is_dir() else None
        resume = previous.path / "checkpoint" if prev and prev["model"] == model_settings else None
        target = swap.iterations
        if resume and prev["trained_on"] != trained_on:
            target = prev["step"] + swap.iterations  # new data: continue from the checkpoint, don't restart
        reached = prev and (prev["step"] >= target or prev.get("stopped_by") == "target_loss")
        if resume and prev["trained_on"] == trained_on and reached:
            context.log.info(f"{name}: already trained to step {prev['step']} on these facesets; nothing to do")
            return _result(key, prev, previous.path, previous.version)

        work_dir = own_location(store, context) / "_work"  # beside the versions: gc leaves it
        source = _resume_point(work_dir, resume, model_settings)
        warm_from = None
        if source is None and swap.parent:
            warm_from = inputs["parent"].path / "checkpoint"
        # The evaluation's held-out faces (same share and seed) never reach the trainer.
        # Decoded once per faceset version and memory-mapped (ops.trainset): a resumed run starts in seconds.
        data = {side: open_faceset(sets[side].path) for side in ("a", "b")}
        rows = {side: _training_split(len(data[side])) for side in ("a", "b")}
        sized = {side: at_resolution(data[side], swap.resolution) for side in ("a", "b")}  # resized once per version
        device = torch_device.resolve()
        context.log.info(f"{name}: training on {device}, {len(rows['a'])} + {len(rows['b'])} faces, to step {target}"
                         + (f" (resuming from {source})" if source else f" (warm start from {swap.parent})" if warm_from else ""))
        manifest: dict = {}

        last_log = [0.0]

        def progress(p: dict) -> None:
            if time.monotonic() - last_log[0] < 10 and p["step"] < p["iterations"]:
                return  # a line every ~10 s is enough to watch; the loss curve keeps every point
            last_log[0] = time.monotonic()
            context.log.info(f"step {p['step']}/{p['iterations']} loss A {p['loss_a']:.4f} B {p['loss_b']:.4f} "
                             f"{p['images_per_s']:.0f} img/s ETA {p['eta_s']:.0f}s")

        def build(tmp: Path) -> None:
            config, training = _train_config(swap, target), {"world_size": 1}
            if config.gpus > 1:  # data-parallel, in torchrun's processes; the faces are read from the same cache
                spec = {"faceset_a": str(sets["a"].path), "faceset_b": str(sets["b"].path), "rows_a": rows["a"].tolist(),
                        "rows_b": rows["b"].tolist(), "model": model_settings, "train": asdict(config), "device": device,
                        "resume_from": _str(source), "checkpoint_dir": str(tmp / "checkpoint"), "work_dir": str(work_dir),
                        "warm_from": _str(warm_from), "warm_what": swap.warm_start, "extra": {"trained_on": trained_on}}
                result, training = _train_distributed(context, spec, config.gpus)
            else:
                result = train(sized["a"][0], sized["b"][0], sized["a"][1], sized["b"][1], ModelConfig(**model_settings),
                               config, device,
                               resume_from=source, checkpoint_dir=tmp / "checkpoint", work_dir=work_dir,
                               warm_from=warm_from, warm_what=swap.warm_start, extra={"trained_on": trained_on},
                               progress=progress, index_a=rows["a"], index_b=rows["b"])
            report = evaluate(tmp / "checkpoint", sets["a"].path, sets["b"].path, face_analyzer.analyzer(project.extraction),
                              device, cache_dir=store.location("_cache", "embeddings"))
            for file, png in report.pop("images").items():  # preview.png, loss_curve.png
                (tmp / file).write_bytes(png)
            manifest["evaluation"] = report
            manifest.update({"swap": name, "model": model_settings, "step": result.step, "start_step": result.start_step,
                             "trained_on": trained_on, "final_loss_a": result.final_loss_a,
                             "final_loss_b": result.final_loss_b, "seconds": round(result.seconds, 1),
                             "losses": result.history, "runs": result.runs, "stopped_by": result.stopped_by, "training": training,
                             "warm_start": {"parent": swap.parent, "what": swap.warm_start} if warm_from else None})
            write_manifest(tmp, manifest)

        published = store.publish(own_location(store, context), build)
        return _result(key, manifest, published.path, published.version)

    return face_model


def _train_config(swap, target: int) -> TrainConfig:
    """The project's training settings; stop options are budgets and `gpus` only spreads the
    same global batch over processes (ops/distributed.py): none is part of the code version."""
    return TrainConfig(iterations=target, batch_size=swap.batch_size, loss=swap.loss, ssim_weight=swap.ssim_weight,
                       mask_weight=swap.mask_weight, checkpoint_minutes=swap.checkpoint_minutes, compile=swap.compile,
                       max_seconds=swap.max_minutes * 60 if swap.max_minutes else None, target_loss=swap.target_loss,
                       gpus=swap.gpus, ddp_backend=swap.ddp_backend)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _train_distributed(context: dg.AssetExecutionContext, spec: dict[str, Any], gpus: int) -> tuple[Any, dict[str, Any]]:
    """torchrun with one process per GPU (gloo processes on CPU) through Dagster Pipes: rank 0's
    log lines reach this run's log; returns its TrainResult and summary (world_size, faces/s...)."""
    import torch

    from swapline.ops.train import TrainResult

    on_cuda = spec["device"].startswith("cuda")
    if on_cuda and torch.cuda.device_count() < gpus:
        raise dg.Failure(f"gpus: {gpus} but torch sees {torch.cuda.device_count()} CUDA devices")
    # One thread a process on CPU: the ranks share the cores (torchrun would warn and set it too).
    env = {} if on_cuda else {"OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="swapline-ddp-") as folder:
        (Path(folder) / "spec.json").write_text(json.dumps(spec))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}",
                   "-m", "swapline.ddp_worker", str(Path(folder) / "spec.json")]
        context.log.info(f"launching {gpus} training processes: {' '.join(command[1:])}")
        # A stop request reaches torchrun as SIGINT; it passes it on and the ranks save at the
        # next step boundary, for which Pipes waits up to 90 s (its default, 20 s, can cut a save short).
        invocation = dg.PipesSubprocessClient(env=env, termination_timeout_seconds=90).run(context=context, command=command)
    (report,) = invocation.get_custom_messages()
    summary = {key: value.value for key, value in invocation.get_materialize_result().metadata.items()}
    result = TrainResult(report["step"], report["start_step"], report["losses"], report["final_loss_a"], report["final_loss_b"],
                         report["seconds"], Path(report["checkpoint_dir"]), None, report["stopped_by"],
                         _path(report["resumed_from"]), history=report["history"], runs=report["runs"])
    return result, summary


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _resume_point(work_dir: Path, published: Path | None, model_settings: dict) -> Path | None:
    """The furthest-trained checkpoint of this model: the newest loadable work checkpoint (a
    crashed run's progress) or the published one, whichever has more steps."""
    from swapline.ops.checkpoint import read_state
    from swapline.ops.model import ModelConfig
    from swapline.ops.workdir import latest_checkpoint

    wanted = ModelConfig(**model_settings).to_dict()
    options = [p for p in (latest_checkpoint(work_dir), published)
               if p is not None and read_state(p).get("config", {}).get("model") == wanted]
    return max(options, key=lambda p: read_state(p)["step"], default=None)


def _refuse_failed_facesets(instance: dg.DagsterInstance, swap: str, identities: tuple[str, str]) -> None:
    """Per swap gate: a faceset whose blocking check failed stops the swaps that use it, and
    only those (within one run Dagster blocks downstream itself; across runs this does)."""
    for identity in identities:
        if failed := failed_blocking_checks(instance, identity):
            raise dg.Failure(
                f"{swap}: not training: faceset {identity} failed check {', '.join(failed)}. "
                f"Add faces for {identity} (see `swapline report`) and re-materialize {identity}/faceset.",
                metadata={"identity": identity, "failed_checks": dg.MetadataValue.json(failed)},
            )


def _training_split(n: int):
    """The rows to train on: all but the evaluation's held-out faces (ops.evaluate.split_holdout:
    5%, seed 0). Indices, not a copy: the trainer reads those rows from the memory map."""
    from swapline.ops.evaluate import split_holdout

    train_idx, _ = split_holdout(n)
    return train_idx


def _result(key: dg.AssetKey, manifest: dict, path: Path, version: str) -> dg.MaterializeResult:
    metadata = {
        "step": manifest["step"],
        "steps_this_run": manifest["step"] - manifest.get("start_step", manifest["step"]),
        "loss_a": float(manifest["final_loss_a"]),
        "loss_b": float(manifest["final_loss_b"]),
        "train_seconds": manifest.get("seconds", 0.0),
        # How the last run trained: processes, and for data-parallel runs its batch split and faces/s.
        "world_size": 1,
        **manifest.get("training", {}),
        "checkpoint": dg.MetadataValue.path(str(path / "checkpoint")),
        **artifact_metadata(path),
    }
    if runs := manifest.get("runs"):  # every run that trained this checkpoint, crashed ones too
        metadata["training_runs"] = dg.MetadataValue.md(
            "| run | steps | stopped by | seconds |\n|---|---|---|---|\n"
            + "".join(f"| {i} | {r['start_step']}–{r['step']} | {r['stopped_by']} | {r['seconds']} |\n" for i, r in enumerate(runs, 1)))
    if report := manifest.get("evaluation"):
        identity, recon, pose = report["identity"], report["reconstruction"], report["pose"]
        metadata.update({
            "identity_transfer_a_to_b": identity["a_to_b"], "identity_transfer_b_to_a": identity["b_to_a"],
            "val_ssim_a": recon["a_to_a"]["ssim"], "val_ssim_b": recon["b_to_b"]["ssim"],
            "val_psnr_a": recon["a_to_a"]["psnr"], "val_psnr_b": recon["b_to_b"]["psnr"],
            "landmark_error_iod_a_to_b": pose["a_to_b"]["landmark_error_iod"],
            "yaw_diff_a_to_b": pose["a_to_b"]["yaw_diff"], "held_out": dg.MetadataValue.json(report["held_out"]),
        })
    for file, alt in (("preview.png", "A, A→A, A→B / B, B→B, B→A (held-out faces first)"), ("loss_curve.png", "loss curve")):
        if (path / file).is_file():
            metadata[file.removesuffix(".png")] = image_md((path / file).read_bytes(), alt)
    # Checks judge the kept model, also when this run had nothing to do (every spec needs a result).
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version),
                                check_results=evaluate_model(key, manifest, path))
