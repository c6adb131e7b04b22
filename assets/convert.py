"""convert: render a swap onto a target video, labelled as synthetic, audio kept."""


from pathlib import Path

import dagster as dg

from swapline.assets.common import Eta, code_version
from swapline.ops import provenance
from swapline.ops.collect import media_path
from swapline.ops.convert import ConvertOptions, FrameSwapper, convert_video, require_consent
from swapline.ops.storage import atomic_write_json
from swapline.project import Project
from swapline.quality_checks.video_checks import evaluate_converted, video_check_specs
from swapline.resources.analyzer import FaceAnalyzerResource
from swapline.resources.device import TorchDevice
from swapline.resources.storage import StorageResource


def converted_video_asset(project: Project, name: str) -> dg.AssetsDefinition:
    conversion = project.conversions[name]
    swap = project.swaps[conversion.swap]
    shown, rendered = conversion.sides(swap)
    to_side = "b" if conversion.direction == "a_to_b" else "a"
    options = ConvertOptions(**conversion.options.model_dump())
    consents = {who: project.identities[who].consent for who in (shown, rendered)}
    key = dg.AssetKey([name, "converted_video"])

    @dg.asset(
        key=key,
        deps=[dg.AssetKey([conversion.swap, "face_model"]), dg.AssetKey([name, "target_video"])],
        group_name="convert",
        pool="gpu",
        code_version=code_version("converted_video", {**options.__dict__, "direction": conversion.direction}),
        kinds={"video"},
        check_specs=video_check_specs(key),
    )
    def converted_video(context: dg.AssetExecutionContext, storage: StorageResource, torch_device: TorchDevice,
                        face_analyzer: FaceAnalyzerResource) -> dg.MaterializeResult:
        """The target video with the face swapped in and blended back (feathered landmark mask,
        colour matched), audio kept; labelled as synthetic in the container metadata, a JSON
        provenance sidecar and a visible mark. Refuses to run without consent for both people.
        The written file is then checked against the source: same length, audio kept, labels
        present (the target's pose and lighting coverage is checked earlier, on target_video)."""
        require_consent(consents)
        from swapline.ops.train import load_for_inference

        store = storage.store()
        model = store.current(store.location(conversion.swap, "face_model"))
        target = store.current(store.location(name, "target_video"))
        target_manifest = target.manifest()
        video = media_path(target_manifest, target.path)
        device = torch_device.resolve()
        analyzer = face_analyzer.analyzer(project.extraction, device)
        swapper = FrameSwapper(analyzer, load_for_inference(model.path / "checkpoint", device), to_side, device, options)
        eta = Eta(target_manifest["video"]["frames"] or 0, context.log, f"{name} frames converted")
        model_manifest = model.manifest()
        stats: dict = {}
        tags = provenance.container_tags(name, conversion.swap)

        def build(tmp: Path) -> None:
            stats.update(convert_video(video, tmp / f"{name}.mp4", swapper, options=options,
                                       tags=tags, progress=eta.tick))
            atomic_write_json(tmp / f"{name}.provenance.json", provenance.sidecar(
                conversion=name, swap=conversion.swap, direction=conversion.direction,
                video_shows=shown, face_rendered=rendered,
                model={"version": model.version, "step": model_manifest["step"], **model_manifest["model"]},
                facesets=model_manifest["trained_on"],
                target={"sha256": target_manifest["sha256"], "source": conversion.video},
                sources={who: [s.location for s in project.identities[who].sources] for who in (shown, rendered)},
                consent={who: c.model_dump(mode="json") for who, c in consents.items()},
                options=options.__dict__, stats=stats,
            ))

        published = store.publish(store.location(name, "converted_video"), build)
        output = published.path / f"{name}.mp4"
        context.log.info(f"{name}: {stats['swapped']}/{stats['frames']} frames swapped at {stats['fps']} fps -> {output}")
        return dg.MaterializeResult(
            metadata={**stats, "video": dg.MetadataValue.path(str(output)),
                      "provenance": dg.MetadataValue.path(str(published.path / f"{name}.provenance.json"))},
            data_version=dg.DataVersion(published.version),
            check_results=evaluate_converted(key, video, output, published.path / f"{name}.provenance.json",
                                             source_frames=target_manifest["video"]["frames"], expected_tags=tags,
                                             mark_position=options.mark_position),
        )

    return converted_video
