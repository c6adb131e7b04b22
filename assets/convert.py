"""convert: render a swap onto a target video, labelled as synthetic, audio kept."""


from pathlib import Path

import dagster as dg

from swapline.assets.common import ConsentLive, Eta, code_version, image_md, on_change, own_location
from swapline.executors import GPU_OP_TAGS
from swapline.ops import provenance
from swapline.ops.collect import media_path
from swapline.ops.consent import require_live_consent
from swapline.ops.storage import Published, atomic_write_json
from swapline.project import Project
from swapline.quality_checks.video_checks import evaluate_converted, video_check_specs
from swapline.resources.analyzer import FaceAnalyzerResource
from swapline.resources.device import TorchDevice
from swapline.resources.signer import Signer
from swapline.resources.storage import StorageResource, artifact_input, artifact_metadata


def converted_video_asset(project: Project, name: str) -> dg.AssetsDefinition:
    conversion = project.conversions[name]
    swap = project.swaps[conversion.swap]
    shown, rendered = conversion.sides(swap)
    to_side = "b" if conversion.direction == "a_to_b" else "a"
    options = conversion.options
    consents = {who: project.identities[who].consent for who in (shown, rendered)}
    key = dg.AssetKey([name, "converted_video"])

    @dg.asset(
        key=key,
        ins={"model": artifact_input(dg.AssetKey([conversion.swap, "face_model"])),
             "target": artifact_input(dg.AssetKey([name, "target_video"])),
             "target_faces": artifact_input(dg.AssetKey([name, "target_faces"])),
             "faceset": artifact_input(dg.AssetKey([shown, "faceset"]))},  # who the video shows: the identity gate's references
        group_name="convert",
        pool="gpu",
        op_tags=GPU_OP_TAGS,  # with Celery: the `gpu` queue (swapline/executors.py); other executors ignore it
        code_version=code_version("converted_video", {**options.output_settings(), "direction": conversion.direction}),
        kinds={"video"},
        check_specs=video_check_specs(key),
        automation_condition=on_change() & ConsentLive(consents),
    )
    def converted_video(context: dg.AssetExecutionContext, storage: StorageResource, torch_device: TorchDevice,
                        face_analyzer: FaceAnalyzerResource, signer: Signer, model: Published, target: Published,
                        target_faces: Published, faceset: Published) -> dg.MaterializeResult:
        """The target video with the face swapped in and blended back: only the person the video
        shows is replaced (the target_faces tracks whose embeddings match that person's faceset;
        others stay untouched), nothing detected here (target_faces found every face once),
        landmarks and colour smoothed over time (no
        jitter, no flicker), missed detections bridged, batched model calls, masked and colour
        matched per the conversion's options; timestamps and audio of the source kept. Labelled
        as synthetic in every layer: container metadata, a visible mark, an invisible watermark
        in every frame's chroma (64-bit payload naming this conversion), a signed C2PA manifest
        (the last write), a JSON sidecar holding the signed file's hash, and a record in the
        hash-chained audit log. The written file must read back as signed and watermarked, or
        nothing is published (fail closed; none of these layers can be switched off).
        Refuses to run without live consent of both people (declared, not revoked, not expired). The written file is then checked
        against the source: same length, audio kept, labels present."""
        require_live_consent(consents, action=f"convert {name}")
        from swapline.ops.audit import AuditLog
        from swapline.ops.convert import Converter, convert_video
        from swapline.ops.detections import faceset_references
        from swapline.ops.inference import load_for_inference
        from swapline.ops.seal import seal
        from swapline.ops.target import TABLE, planned_faces, read_table
        from swapline.ops.video_out import bit_depths
        from swapline.ops.watermark import ALGORITHM, Watermarker, payload_for

        store = storage.store()
        target_manifest, model_manifest = target.manifest(), model.manifest()
        frames = target_faces.manifest()["stats"]["frames"]  # decoded by target_faces, which checked the file
        video = media_path(target_manifest, target.path)
        device = torch_device.resolve()
        home = Path(storage.root)
        identity = signer.identity(home)  # a missing or damaged key fails here, before any work
        payload = payload_for(f"{name}@{context.run_id}", model.version)
        analyzer = face_analyzer.analyzer(project.extraction, device)
        planned = planned_faces(read_table(target_faces.path / TABLE),
                                faceset_references(analyzer, faceset.path, cache_dir=store.location("_cache", "embeddings")),
                                options.identity_distance)
        converter = Converter(analyzer, load_for_inference(model.path / "checkpoint", device), to_side, device, options,
                              planned=planned)
        eta = Eta(frames, context.log, f"{name} frames converted")
        stats: dict = {}
        sealed: dict = {}
        tags = provenance.container_tags(name, conversion.swap)

        def build(tmp: Path) -> None:
            output = tmp / f"{name}.mp4"
            stats.update(convert_video(video, output, converter, tags=tags, progress=eta.tick,
                                       mark=Watermarker(payload, device=str(device)).embed_frame))
            stats.update(bit_depths(video, output))  # a 10-bit source comes out 8-bit (ops/video_out.py): say so
            preview = stats.pop("preview")
            if preview:
                (tmp / "preview.jpg").write_bytes(preview_strip(preview))
            facts = {"conversion": name, "run_id": context.run_id, "swap": conversion.swap, "model_version": model.version,
                     "model_step": model_manifest["step"], "facesets": {**model_manifest["trained_on"], "reference": faceset.version},
                     "target_sha256": target_manifest["sha256"], "consent": {who: c.reference() for who, c in consents.items()}}
            sealed.update(seal(output, identity, title=f"{name} (synthetic: face swapped by swapline)", parent=video,
                               assertion=facts, payload=payload).as_dict())
            atomic_write_json(tmp / f"{name}.provenance.json", provenance.sidecar(
                conversion=name, swap=conversion.swap, direction=conversion.direction,
                video_shows=shown, face_rendered=rendered,
                model={"version": model.version, "step": model_manifest["step"], **model_manifest["model"]},
                facesets={**model_manifest["trained_on"], "reference": faceset.version},
                target={"sha256": target_manifest["sha256"], "source": conversion.video, "faces": target_faces.version},
                sources={who: [s.location for s in project.identities[who].sources] for who in (shown, rendered)},
                consent={who: c.model_dump(mode="json") for who, c in consents.items()},
                options=options.model_dump(mode="json"), stats=stats, run_id=context.run_id,
                output_sha256=sealed["sha256"], c2pa={k: sealed[k] for k in ("c2pa_state", "signer", "timestamp")},
                watermark={"algorithm": ALGORITHM, "payload": sealed["watermark_payload"],
                           "bits_matched": sealed["watermark_bits_matched"]},
            ))
            # Last: a conversion that failed above leaves no record of an output that does not exist.
            AuditLog.in_home(home).append({**facts, "output_sha256": sealed["sha256"], "watermark_payload": sealed["watermark_payload"],
                                           "c2pa_state": sealed["c2pa_state"], "signer": sealed["signer"]})

        published = store.publish(own_location(store, context), build)
        output = published.path / f"{name}.mp4"
        if stats["swapped"] == 0:
            context.log.warning(f"{name}: no face of {shown} found in any frame: the output is the source unchanged "
                                "(re-encoded, labelled synthetic)")
        if stats["bit_depth_out"] < stats["bit_depth_in"]:
            context.log.warning(f"{name}: the {stats['bit_depth_in']}-bit source ({stats['pix_fmt_in']}) was written as "
                                f"{stats['bit_depth_out']}-bit ({stats['pix_fmt_out']})")
        context.log.info(f"{name}: {stats['swapped']}/{stats['frames']} frames swapped at {stats['fps']} fps "
                         f"(stages {stats['stage_seconds']}) -> {output}")
        return dg.MaterializeResult(
            metadata={**_metadata(stats, output, published.path, target_manifest),
                      "c2pa": sealed["c2pa_state"], "signer": sealed["signer"] or "", "output_sha256": sealed["sha256"],
                      "watermark_payload": sealed["watermark_payload"],
                      "watermark_bits_matched": sealed["watermark_bits_matched"]},
            data_version=dg.DataVersion(published.version),
            check_results=evaluate_converted(key, video, output, published.path / f"{name}.provenance.json",
                                             source_frames=frames, expected_tags=tags,
                                             mark_position=options.mark_position),
        )

    return converted_video


def preview_strip(pairs: list) -> bytes:
    """JPEG: one row per picked frame, original | swapped, 180 px high."""
    import cv2
    import numpy as np

    rows = []
    for original, swapped in pairs:
        row = np.concatenate([original, swapped], axis=1)
        rows.append(cv2.resize(row, (round(row.shape[1] * 180 / row.shape[0]), 180), interpolation=cv2.INTER_AREA))
    width = min(r.shape[1] for r in rows)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(np.concatenate([r[:, :width] for r in rows]), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 85])
    return jpeg.tobytes()


def _metadata(stats: dict, output: Path, folder: Path, target_manifest: dict) -> dict:
    duration = target_manifest["video"].get("duration") or 0.0
    metadata = {k: v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    metadata.update({
        "audio": stats["audio"], "stage_seconds": dg.MetadataValue.json(stats["stage_seconds"]),
        "pix_fmt_in": stats["pix_fmt_in"], "pix_fmt_out": stats["pix_fmt_out"],
        "realtime_factor": round(duration / stats["seconds"], 3) if stats["seconds"] else 0.0,
        "duration_s": duration, "size_mb": round(output.stat().st_size / 1e6, 2), **artifact_metadata(folder),
        "video": dg.MetadataValue.path(str(output)),
        "provenance": dg.MetadataValue.path(str(folder / f"{output.stem}.provenance.json")),
    })
    if (folder / "preview.jpg").is_file():
        metadata["preview"] = image_md((folder / "preview.jpg").read_bytes(), "original | swapped", "image/jpeg")
    return metadata
