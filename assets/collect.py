"""collect: each source's media, recorded by content so unchanged sources stay fresh."""


from pathlib import Path

import dagster as dg

from swapline.assets.common import code_version, sources_partitions
from swapline.ops import collect as ops
from swapline.ops.media import verify_video
from swapline.ops.storage import hash_json, write_manifest
from swapline.project import Conversion, Project
from swapline.resources.downloader import Downloader
from swapline.resources.storage import StorageResource


def source_media_asset(project: Project, identity: str) -> dg.AssetsDefinition:
    sources = project.source_keys(identity)

    @dg.asset(
        key=[identity, "source_media"],
        partitions_def=sources_partitions(identity),
        group_name="collect",
        code_version=code_version("source_media"),
        kinds={"video"},
    )
    def source_media(context: dg.AssetExecutionContext, storage: StorageResource, downloader: Downloader) -> dg.MaterializeResult:
        """One source of this identity's faces (a URL, a local video or a photo folder), recorded
        by content hash. URLs are downloaded by yt-dlp once; local media is hashed, not copied."""
        key = context.partition_key
        if key not in sources:
            raise dg.Failure(f"Source partition {key!r} is no longer in the project file; the sync sensor will remove it.")
        src = sources[key]
        store = storage.store()
        location = store.location(identity, "source_media", key)
        previous = store.current_or_none(location)
        if src.url and previous and previous.manifest().get("url") == src.url:
            context.log.info(f"{src.url} already collected; keeping it")
            return _result(previous.manifest(), previous.version, previous.path)

        manifest: dict = {}
        archive = store.location(identity, "download-archive.txt")  # yt-dlp's record of what it fetched

        def build(tmp: Path) -> None:
            if src.url:
                manifest.update(ops.collect_url(src.url, tmp, lambda url, dest: downloader.fetch(url, dest, archive)))
            elif src.video:
                manifest.update(ops.collect_video(src.video))
            else:
                manifest.update(ops.collect_photos(src.photos))
            write_manifest(tmp, manifest)

        published = store.publish(location, build, version=None)
        return _result(manifest, hash_json(ops.content_key(manifest))[:32], published.path)

    return source_media


def target_video_asset(name: str, conversion: Conversion) -> dg.AssetsDefinition:
    @dg.asset(
        key=[name, "target_video"],
        group_name="collect",
        code_version=code_version("target_video"),
        kinds={"video"},
    )
    def target_video(context: dg.AssetExecutionContext, storage: StorageResource, downloader: Downloader) -> dg.MaterializeResult:
        """The video this conversion renders onto, collected like a source and checked to decode
        completely (in a child process, since damaged media can crash the decoder)."""
        store = storage.store()
        manifest: dict = {}

        def build(tmp: Path) -> None:
            if conversion.is_url:
                manifest.update(ops.collect_url(conversion.video, tmp, downloader.fetch))
                path = tmp / manifest["file"]
            else:
                path = Path(conversion.video)
                manifest.update(ops.collect_video(path))
            info = verify_video(path)
            manifest["video"] = {"width": info.width, "height": info.height, "fps": info.fps,
                                 "frames": info.frames, "duration": info.duration, "audio": info.has_audio}
            write_manifest(tmp, manifest)

        published = store.publish(store.location(name, "target_video"), build)
        context.log.info(f"target video: {manifest['video']}")
        return _result(manifest, hash_json(ops.content_key(manifest))[:32], published.path)

    return target_video


def _result(manifest: dict, version: str, path: Path) -> dg.MaterializeResult:
    count = len(manifest["files"]) if manifest["kind"] == "photos" else 1
    metadata = {
        "kind": manifest["kind"],
        "files": count,
        "bytes": sum(f["bytes"] for f in manifest["files"]) if manifest["kind"] == "photos" else manifest["bytes"],
        "artifact": dg.MetadataValue.path(str(path)),
    }
    if "video" in manifest:
        metadata.update({f"video_{k}": v for k, v in manifest["video"].items() if v is not None})
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))
