"""target: the conversion's target video analysed once, as a versioned table of its faces."""


from pathlib import Path

import dagster as dg

from swapline.assets.common import Eta, code_version, on_change, own_location
from swapline.ops.collect import media_path
from swapline.ops.media import BadMedia
from swapline.ops.sandbox import IsolatedCrash
from swapline.ops.storage import Published, write_manifest
from swapline.ops.target import LINK_IOU, REVERIFY, TABLE
from swapline.project import Project
from swapline.resources.analyzer import FaceAnalyzerResource
from swapline.resources.device import TorchDevice
from swapline.resources.storage import StorageResource, artifact_input, artifact_metadata


def target_faces_asset(project: Project, name: str) -> dg.AssetsDefinition:
    settings = FaceAnalyzerResource().settings(project.extraction)
    ins = {"target": artifact_input(dg.AssetKey([name, "target_video"]))}
    if seed := project.source_showing(name):  # the target is also a training source: reuse its faces
        identity, key = seed
        mapping = dg.SpecificPartitionsPartitionMapping([key])
        ins["source_frames"] = artifact_input(dg.AssetKey([identity, "frames"]), mapping)
        ins["source_faces"] = artifact_input(dg.AssetKey([identity, "aligned_faces"]), mapping)

    @dg.asset(
        key=[name, "target_faces"],
        ins=ins,
        group_name="convert",
        # What changes the table: how faces are found and tracked. Threads only change speed.
        code_version=code_version("target_faces", {"analyzer": settings.as_dict(), "reverify": REVERIFY, "link_iou": LINK_IOU}),
        kinds={"parquet"},
        automation_condition=on_change(),
    )
    def target_faces(context: dg.AssetExecutionContext, storage: StorageResource, face_analyzer: FaceAnalyzerResource,
                     torch_device: TorchDevice, target: Published, **seeds: dict[str, Published]) -> dg.MaterializeResult:
        """Every frame of the target video decoded once (in a child process: this is also the check
        that the file decodes completely) and its faces found: box, 68 landmarks, a track id
        linking a face across frames, and an identity embedding each time a track appears (and
        every 30 frames), in target_faces.parquet. Conversion reads this table and detects
        nothing, so re-rendering after more training costs no detection; the coverage checks
        read the pose and light of every frame. Frames a training source already analysed (the
        target is also a source) are taken from its extraction. Runs outside the `gpu` pool."""
        from swapline.ops.facetable import read_faces
        from swapline.ops.target import analyse_target, extraction_seeds

        store = storage.store()
        manifest = target.manifest()
        video = media_path(manifest, target.path)
        known = {}
        if seeds:
            frames, faces = (next(iter(seeds[k].values()), None) for k in ("source_frames", "source_faces"))
            if frames is not None and faces is not None and faces.manifest().get("backend") == \
                    face_analyzer.analyzer(project.extraction, torch_device.device).describe():
                known = extraction_seeds(frames.manifest(), read_faces(faces.path / "faces.parquet", with_images=False), True)
                context.log.info(f"{name}: {len(known)} frames' faces taken from extraction (the video is also a source)")
        eta = Eta(manifest["video"].get("frames") or 0, context.log, f"{name} target frames analysed")
        stats: dict = {}

        def build(tmp: Path) -> None:
            try:
                stats.update(analyse_target(video, tmp / TABLE, settings, fan_weights_dir=face_analyzer.fan_weights_dir,
                                            device=torch_device.device, seeds=known, progress=lambda done, total: eta.tick(done)))
            except (BadMedia, IsolatedCrash) as exc:
                raise dg.Failure(f"{name}: the target video cannot be decoded: {exc}") from exc
            write_manifest(tmp, {"video_sha256": manifest["sha256"], "stats": stats})

        published = store.publish(own_location(store, context), build)
        context.log.info(f"{name}: {stats['faces']} faces in {stats['frames']} frames, {stats['tracks']} tracks; "
                         f"{stats['detections_run']} frames detected, {stats['seeded']} from extraction")
        return dg.MaterializeResult(
            metadata={**{k: v for k, v in stats.items() if isinstance(v, (int, float))},
                      **artifact_metadata(published.path),
                      "table": dg.MetadataValue.path(str(published.path / TABLE))},
            data_version=dg.DataVersion(published.version),
        )

    return target_faces
