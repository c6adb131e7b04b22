"""collect: each source's media, recorded by content so unchanged sources stay fresh."""


import inspect
import warnings
from pathlib import Path

import dagster as dg

from swapline.assets.common import code_version, on_change, own_location, sources_partitions
from swapline.ops import collect as ops
from swapline.ops.media import BadMedia, probe
from swapline.ops.storage import hash_json, write_manifest
from swapline.project import Project, Source
from swapline.resources.downloader import Downloader
from swapline.resources.storage import StorageResource, recorded


def source_version(source: Source, known: tuple[str, str] | None = None) -> tuple[str, str]:
    """(fingerprint, data version) of a source as it is now. A local source's version is its
    content hash, the very version source_media will report once it has collected it; the
    content is hashed only when the cheap fingerprint (names, sizes, mtimes) moved from `known`.
    A URL is not fetched to be looked at: its version is the URL (the daily schedule re-collects)."""
    if source.url:
        version = hash_json(["url", source.url])[:32]
        return version, version
    fingerprint = ops.local_fingerprint(video=source.video, photos=source.photos)
    if known and known[0] == fingerprint:
        return known
    manifest = ops.collect_video(source.video) if source.video else ops.collect_photos(source.photos)
    return fingerprint, ops.content_version(manifest)


def source_files_asset(project: Project, identity: str) -> dg.SourceAsset:
    sources = project.source_keys(identity)
    partitions = sources_partitions(identity)

    def observe(context: dg.OpExecutionContext) -> dg.DataVersionsByPartition:
        """The files of each source where the user keeps them (a photo folder, a video, a URL),
        outside Dagster. The `source_watch` sensor observes them every minute and records a new
        data version (their content hash) when they changed; the automation then requests that
        source's partition downstream. Observing by hand does the same for every source at once."""
        existing = set(context.instance.get_dynamic_partitions(partitions.name))
        return dg.DataVersionsByPartition({key: source_version(src)[1] for key, src in sources.items() if key in existing})

    with warnings.catch_warnings():  # beta in 1.13 and warned at every load; this is its documented use
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.observable_source_asset(key=[identity, "source_files"], partitions_def=partitions, group_name="collect",
                                          description=inspect.cleandoc(observe.__doc__))(observe)


def source_media_asset(project: Project, identity: str) -> dg.AssetsDefinition:
    sources = project.source_keys(identity)

    @dg.asset(
        key=[identity, "source_media"],
        deps=[dg.AssetKey([identity, "source_files"])],
        partitions_def=sources_partitions(identity),
        group_name="collect",
        code_version=code_version("source_media"),
        kinds={"video"},
        automation_condition=on_change(),
    )
    def source_media(context: dg.AssetExecutionContext, storage: StorageResource, downloader: Downloader) -> dg.MaterializeResult:
        """One source of this identity's faces (a URL, a local video or a photo folder), recorded
        by content hash. URLs are downloaded by yt-dlp once; local media is hashed, not copied."""
        key = context.partition_key
        if key not in sources:
            raise dg.Failure(f"Source partition {key!r} is no longer in the project file; the sync sensor will remove it.")
        src = sources[key]
        store = storage.store()
        previous = recorded(context.instance, context.asset_key, key)
        kept = previous.manifest() if previous and previous.path.is_dir() else {}
        if src.url and kept.get("url") == src.url:
            context.log.info(f"{src.url} already collected; keeping it")
            return _result(kept, previous.path)

        manifest: dict = {}
        location = own_location(store, context)
        archive = location.parent / "download-archive.txt"  # yt-dlp's record of what it fetched

        def build(tmp: Path) -> None:
            if src.url:
                manifest.update(ops.collect_url(src.url, tmp, lambda url, dest: downloader.fetch(url, dest, archive)))
            elif src.video:
                manifest.update(ops.collect_video(src.video))
            else:
                manifest.update(ops.collect_photos(src.photos))
            write_manifest(tmp, manifest)

        published = store.publish(location, build)
        return _result(manifest, published.path)

    return source_media


def target_video_asset(project: Project, name: str) -> dg.AssetsDefinition:
    conversion = project.conversions[name]

    @dg.asset(
        key=[name, "target_video"],
        group_name="collect",
        code_version=code_version("target_video"),
        kinds={"video"},
        automation_condition=on_change(),
    )
    def target_video(context: dg.AssetExecutionContext, storage: StorageResource, downloader: Downloader) -> dg.MaterializeResult:
        """The video this conversion renders onto, collected like a source (a URL downloaded once,
        a local file hashed, not copied) and its header read. Its frames are decoded and its
        faces analysed once, by `target_faces`."""
        store = storage.store()
        manifest: dict = {}

        def build(tmp: Path) -> None:
            if conversion.is_url:
                manifest.update(ops.collect_url(conversion.video, tmp, downloader.fetch))
                path = tmp / manifest["file"]
            else:
                path = Path(conversion.video)
                manifest.update(ops.collect_video(path))
            try:
                info = probe(path)
            except BadMedia as exc:
                raise dg.Failure(f"{name}: the target video cannot be read: {exc}") from exc
            manifest["video"] = {"width": info.width, "height": info.height, "fps": info.fps,
                                 "frames": info.frames, "duration": info.duration, "audio": info.has_audio}
            write_manifest(tmp, manifest)

        published = store.publish(own_location(store, context), build)
        context.log.info(f"target video: {manifest['video']}")
        return _result(manifest, published.path)

    return target_video


def _result(manifest: dict, path: Path) -> dg.MaterializeResult:
    """The data version is the hash of the content alone (not the artifact folder, whose manifest
    also holds paths), so however a source was collected, the same bytes give the same version."""
    count = len(manifest["files"]) if manifest["kind"] == "photos" else 1
    metadata = {
        "kind": manifest["kind"],
        "files": count,
        "bytes": sum(f["bytes"] for f in manifest["files"]) if manifest["kind"] == "photos" else manifest["bytes"],
        "artifact": dg.MetadataValue.path(str(path)),
    }
    if "video" in manifest:
        metadata.update({f"video_{k}": v for k, v in manifest["video"].items() if v is not None})
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(ops.content_version(manifest)))
