"""extract: sampled frames and aligned faces, one partition per source.

Why per-identity assets partitioned by that identity's sources (an asset factory) rather than
one multi-partitioned asset: Dagster has no dynamic-to-dynamic partition mapping, so a swap
partition could not depend on exactly its two identities, and a (identity x source) cross
product makes phantom partitions that block automation. With `anna/aligned_faces` partitioned
by anna's own sources, adding a video to anna materializes one new partition; her other
sources and everyone else's stay fresh; `anna/faceset` depends on all of anna's partitions
(staleness is tracked up to Dagster's 100-partition limit: more than 99 sources for one
person stop propagating staleness; fold photos into folders to stay below it). A new
identity needs a code-location reload; a new source does not.
"""


from pathlib import Path

import dagster as dg

from swapline.assets.common import Eta, code_version, on_change, own_location, sources_partitions
from swapline.ops.extract import RUN_STATS, extract_faces, reference_embeddings, sample_source
from swapline.ops.facecache import CACHE_DIR, FaceCache, PhotoCache
from swapline.ops.facesegments import FACES, LAYOUT, plan_segments, reusable, total_stats, write_face_table
from swapline.ops.facetable import FORMAT_VERSION
from swapline.ops.media import BadMedia
from swapline.ops.sandbox import IsolatedCrash
from swapline.ops.storage import Published, write_manifest
from swapline.project import Project
from swapline.resources.analyzer import FaceAnalyzerResource
from swapline.resources.device import TorchDevice
from swapline.resources.storage import StorageResource, artifact_input, artifact_metadata, recorded


def frames_asset(project: Project, identity: str) -> dg.AssetsDefinition:
    ext = project.extraction
    settings = {"sample_fps": ext.sample_fps, "skip_similar": ext.skip_similar, "max_frames": ext.max_frames}

    @dg.asset(
        key=[identity, "frames"],
        ins={"source": artifact_input(dg.AssetKey([identity, "source_media"]))},
        partitions_def=sources_partitions(identity),
        group_name="extract",
        code_version=code_version("frames", settings),
        kinds={"image"},
        automation_condition=on_change(),
    )
    def frames(context: dg.AssetExecutionContext, storage: StorageResource, source: Published) -> dg.MaterializeResult:
        """Frames sampled from one source at `extraction.sample_fps` (near-identical consecutive
        frames skipped) as JPEG, or the source's photos normalised; decoding runs in a child
        process so a damaged file fails only this partition. A photo normalised before (by
        content, for any source) is linked from the cache instead of decoded again."""
        store = storage.store()
        key = context.partition_key
        photo_cache = PhotoCache(store.location(CACHE_DIR))
        manifest: dict = {}

        def build(tmp: Path) -> None:
            try:
                manifest.update(sample_source(source.manifest(), source.path, tmp, photo_cache=photo_cache, **settings))
            except (BadMedia, IsolatedCrash) as exc:
                raise dg.Failure(f"Source {key} of {identity} cannot be decoded: {exc}") from exc
            write_manifest(tmp, manifest)

        published = store.publish(own_location(store, context), build)
        skipped = manifest["skipped"]
        context.log.info(f"{len(manifest['frames'])} frames kept of {manifest['decoded']} decoded; {len(skipped)} files skipped")
        metadata = {
            "frames": len(manifest["frames"]),
            "decoded": manifest["decoded"],
            "skipped_similar": manifest["skipped_similar"],
            "skipped_files": len(skipped),
            "photos_reused": photo_cache.hits,
            **artifact_metadata(published.path),
        }
        if skipped:
            metadata["skipped_reasons"] = dg.MetadataValue.json(skipped[:50])
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(published.version))

    return frames


def aligned_faces_asset(project: Project, identity: str) -> dg.AssetsDefinition:
    ext = project.extraction
    references = project.identities[identity].reference_photos

    @dg.asset(
        key=[identity, "aligned_faces"],
        ins={"frames": artifact_input(dg.AssetKey([identity, "frames"]))},
        partitions_def=sources_partitions(identity),
        group_name="extract",
        # Every extraction setting that changes which faces are found, or how they are cropped.
        code_version=code_version("aligned_faces", {"format": FORMAT_VERSION, "layout": LAYOUT, "refs": _reference_hashes(references),
                                                    **ext.model_dump(exclude={"sample_fps", "skip_similar", "max_frames", "workers"})}),
        kinds={"image", "parquet"},
        automation_condition=on_change(),
    )
    def aligned_faces(context: dg.AssetExecutionContext, storage: StorageResource,
                      face_analyzer: FaceAnalyzerResource, torch_device: TorchDevice, frames: Published) -> dg.MaterializeResult:
        """Every face in one source's frames: detected, given 68 landmarks, aligned to a canonical
        crop and stored in one table together with its landmarks, transform and attributes
        (faces.parquet, a folder of segments readable with pandas). With reference photos, only
        this person is kept. Faces are cached by image content and settings, so only new frames
        are analysed (the metadata counts detections_run and cache_hits), in `extraction.workers`
        processes; a new version links the segments of the previous one that did not change."""
        store = storage.store()
        key = context.partition_key
        location = own_location(store, context)
        # The device string, not resolve(): torch is imported only if FAN is the backend.
        analyzer = face_analyzer.analyzer(ext, torch_device.device)
        reference = reference_embeddings(analyzer, list(references))
        frames_manifest = frames.manifest()
        cache = FaceCache(store.location(CACHE_DIR), analyzer, reference, ext.identity_distance)
        # What each segment's rows derive from besides its frames (the cache key: the analyzer,
        # references and distance), so a segment of the previous version with the same key is
        # the same bytes: linked, not rebuilt (ops/facesegments.py).
        segments = plan_segments(frames_manifest["frames"], {"cache": cache.key, "identity": identity,
                                                             "source": key, "format": FORMAT_VERSION})
        # Our own previous version, read only to reuse segments: keys, not trust, decide.
        reuse = reusable(getattr(recorded(context.instance, context.asset_key, key), "path", None), FACES)
        eta = Eta(sum(len(s.frames) for s in segments if s.key not in reuse), context.log, f"{identity}/{key} frames analysed")
        run = {"detections_run": 0, "workers": 0}  # not in the manifest: same faces, same version

        def extract(frame_list: list[dict], first: bool) -> tuple[list, dict]:
            records, stats = extract_faces(frames.path, {**frames_manifest, "frames": frame_list}, analyzer, identity=identity,
                                           source=key, reference=reference, max_distance=ext.identity_distance,
                                           progress=eta.tick if first else None, cache=cache, workers=ext.workers)
            run["detections_run"] += stats["detections_run"]
            run["workers"] = max(run["workers"], stats["workers"])
            return records, {k: v for k, v in stats.items() if k not in RUN_STATS}

        manifest: dict = {}

        def build(tmp: Path) -> None:
            entries = write_face_table(tmp / FACES, segments, reuse, extract)
            # describe(): the settings plus the backend "auto" resolved to, so that resolution
            # is part of the data version.
            # cache_key: what every row derives from besides its frame, so a face is known by
            # (cache_key, face_id) wherever its segment goes (the faceset's embedding cache).
            manifest.update(source=key, backend=analyzer.describe(), stats=total_stats(entries, extract([], False)[1]),
                            segments=entries, format_version=FORMAT_VERSION, layout=LAYOUT, cache_key=cache.key)
            write_manifest(tmp, manifest)

        published = store.publish(location, build)
        stats = manifest["stats"]
        written = sum(1 for e in manifest["segments"] if e["key"] not in reuse)
        run.update(cache_hits=stats["frames"] - run["detections_run"], segments=len(segments), segments_written=written)
        context.log.info(f"{stats['faces']} faces from {stats['frames']} frames; {run['detections_run']} analysed "
                         f"in {run['workers']} process(es), {run['cache_hits']} from the cache; "
                         f"{written} of {len(segments)} segments written")
        context.log.info(f"not used: {stats['no_face']} frames or photos without a face, {stats['too_small']} faces too small, "
                         f"{stats['rejected_identity']} rejected as someone else, {len(frames_manifest['skipped'])} files skipped")
        return dg.MaterializeResult(
            metadata={**not_used_metadata(stats, frames_manifest, ext.identity_distance, bool(references)), **run,
                      "backend": analyzer.resolved_backend, **artifact_metadata(published.path)},
            data_version=dg.DataVersion(published.version),
        )

    return aligned_faces


def not_used_metadata(stats: dict, frames_manifest: dict, threshold: float, references: bool) -> dict:
    """The counts, and what was not used by name (the first ops.unused.LIMIT of each): frames or
    photos without a face, those with faces below min_face, faces rejected as someone else with
    their distances, files skipped with the reason; with reference photos, the filter's margin."""
    from swapline.ops.unused import LIMIT, margin

    skipped = frames_manifest.get("skipped", [])
    metadata = {k: v for k, v in stats.items() if isinstance(v, (int, float))}
    metadata.update(source_kind=frames_manifest.get("kind", ""), decoded=frames_manifest.get("decoded", 0), skipped_files=len(skipped))
    for name in ("no_face_files", "too_small_files", "rejected_faces"):
        metadata[name] = dg.MetadataValue.json(stats.get(name, []))
    metadata["skipped_reasons"] = dg.MetadataValue.json(skipped[:LIMIT])
    if references:
        metadata["identity_margin"] = dg.MetadataValue.json(margin(stats.get("identity_distances", {}), threshold))
    return metadata


def _reference_hashes(photos) -> list[str]:
    """The reference photos by content: moving the project folder changes nothing, a replaced
    photo makes the faces stale (a missing one is the project loader's error to report)."""
    from swapline.ops.storage import sha256_file

    return sorted(sha256_file(p)[:16] if Path(p).is_file() else f"missing:{Path(p).name}" for p in photos)
