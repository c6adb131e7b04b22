"""collect: each source's media, recorded by content so unchanged sources stay fresh."""


import inspect
import warnings
from pathlib import Path

import dagster as dg

from swapline.assets.common import code_version, on_change, own_location, sources_partitions
from swapline.ops import collect as ops
from swapline.ops.download import DownloadSettings
from swapline.ops.ledger import entries_table, is_batch, source_of
from swapline.ops.media import BadMedia, probe
from swapline.ops.storage import files_under, hash_json, write_manifest
from swapline.project import Project, Source
from swapline.resources.downloader import Downloader
from swapline.resources.storage import StorageResource, artifact_metadata, recorded


def source_version(source: Source, known: tuple[str, str] | None = None) -> tuple[str, str]:
    """(fingerprint, data version) of a source as it is now. A local source's version is its
    content hash, the very version source_media will report once it has collected it; the
    content is hashed only when the cheap fingerprint (names, sizes, mtimes) moved from `known`.
    A URL is not fetched to be looked at: its version is the URL (the daily schedule re-collects).
    Not a HEAD of a direct file either: the watch would ask every host every minute. The schedule
    re-collects a single-video URL, and source_media's HEAD then tells whether its file changed."""
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
        """The files of each source where the user keeps them (a photo folder, a video), outside
        Dagster, and the batches of entries a URL source's listings found. The `source_watch`
        sensor observes local files every minute and records a new data version (their content
        hash) when they changed; a URL source is listed by its collection schedule and `swapline
        collect`, each new batch of entries a partition of its own. The automation then requests
        that partition downstream. Observing by hand does the same for every partition at once."""
        from swapline.collection import batch_version

        existing = set(context.instance.get_dynamic_partitions(partitions.name))
        versions = {key: source_version(src)[1] for key, src in sources.items() if key in existing and not src.url}
        versions.update({key: batch_version(key) for key in existing if is_batch(key) and source_of(key) in sources})
        return dg.DataVersionsByPartition(versions)

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
        """One source of this identity's faces, recorded by content hash: a local video or photo
        folder (hashed, not copied), or one batch of a URL source's entries (the new videos one
        listing found in a channel, playlist, feed or page: swapline/collection.py), downloaded
        by yt-dlp once each; an entry a previous version holds is not downloaded again."""
        key = context.partition_key
        if source_of(key) not in sources:
            raise dg.Failure(f"Source partition {key!r} is no longer in the project file; the sync sensor will remove it.")
        src = sources[source_of(key)]
        store = storage.store()
        previous = recorded(context.instance, context.asset_key, key)
        kept = previous.manifest() if previous and previous.path.is_dir() else {}
        if src.url:
            return _collect_batch(context, store, downloader, identity, src, previous, kept, project.downloads)
        manifest: dict = {}

        def build(tmp: Path) -> None:
            if src.video:
                manifest.update(ops.collect_video(src.video))
            else:
                manifest.update(ops.collect_photos(src.photos, known=kept.get("files")))  # unchanged files not re-read
            write_manifest(tmp, manifest)

        published = store.publish(own_location(store, context), build)
        return _result(manifest, published.path)

    return source_media


def _collect_batch(context: dg.AssetExecutionContext, store, downloader: Downloader, identity: str, src: Source,
                   previous, kept: dict, downloads: DownloadSettings) -> dg.MaterializeResult:
    """source_media of a URL source's batch partition: its entries, downloaded once each."""
    from swapline.ops import ledger

    key, location = context.partition_key, own_location(store, context)
    source_dir = ledger.folder(store.root, identity, source_of(key))  # source_files' record: the batch's entries
    entries = ledger.batch_entries(source_dir, key)
    archive = location.parent / "download-archive.txt"  # yt-dlp's record of what it fetched
    manifest: dict = {}

    def build(tmp: Path) -> None:
        try:
            manifest.update(ops.collect_batch(entries, tmp, lambda url, dest: downloader.fetch(url, dest, downloads, archive),
                                              kept if kept.get("kind") == "batch" else None, previous.path if previous else None,
                                              changed=lambda url, validators: downloader.changed(url, validators, downloads)))
        except ops.DownloadFailed as exc:
            raise dg.Failure(f"{identity}/{key}: {exc}") from exc
        manifest["url"] = src.url
        write_manifest(tmp, manifest)

    published = store.publish(location, build)
    failed = [e for e in manifest["entries"] if e.get("error")]
    for entry in failed:
        context.log.warning(f"{entry['url']}: not collected this time ({entry['error']}); the next collection retries it")
    return _result(manifest, published.path, gone=ledger.gone_in(source_dir, key))


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
                manifest.update(ops.collect_url(conversion.video, tmp, lambda url, dest: downloader.fetch(url, dest, project.downloads)))
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


def _result(manifest: dict, path: Path, gone: list[str] | None = None) -> dg.MaterializeResult:
    """The data version is the hash of the content alone (not the artifact folder, whose manifest
    also holds paths), so however a source was collected, the same bytes give the same version."""
    kind = manifest["kind"]
    files = manifest["files"] if kind == "photos" else [e for e in manifest.get("entries", []) if e.get("file")] if kind == "batch" else [manifest]
    metadata = {
        "kind": kind,
        "files": len(files),
        "bytes": sum(f["bytes"] for f in files),
        **artifact_metadata(path),
    }
    if kind == "batch":
        metadata.update(entries=len(manifest["entries"]), failed=len(manifest["entries"]) - len(files), url=manifest["url"],
                        gone=dg.MetadataValue.json(gone or []), listed=dg.MetadataValue.md(entries_table(manifest["entries"], status=True)))
    if "video" in manifest:
        metadata.update({f"video_{k}": v for k, v in manifest["video"].items() if v is not None})
    if kind == "photos":  # files of the folder that are not photos are left out: say which
        ignored = _not_photos(Path(manifest["path"]), {f["path"] for f in files})
        metadata.update(ignored_files=len(ignored), ignored_names=dg.MetadataValue.json(ignored[:20]))
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(ops.content_version(manifest)))


def _not_photos(folder: Path, listed: set[str]) -> list[str]:
    """Files of a photo folder (hidden ones aside, as ops.collect.list_photos) it did not list:
    not images by their suffix. Names relative to the folder, sorted."""
    return sorted(name for name in files_under(folder, skip_hidden=True) if str(Path(folder, name)) not in listed)
