"""curate: one faceset per identity, the union of its sources' faces, deduplicated and filtered."""


from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg

from swapline.assets.common import code_version, image_md, on_change, own_location, sources_partitions
from swapline.ops.candidates import CANDIDATES, read_candidates, write_candidates
from swapline.ops.facesegments import FACES, FACESET, LAYOUT, previous_segments
from swapline.ops.faceset import (
    build_faceset,
    face_files,
    render_sheet,
    rows_content,
    sample_rows,
    with_columns,
    with_images,
    write_faceset,
)
from swapline.ops.facetable import decode_image
from swapline.ops.identity import SAMPLE, purity, sample_embeddings, write_embeddings
from swapline.ops.storage import Published, write_manifest
from swapline.project import Project
from swapline.quality_checks.faceset_checks import evaluate_faceset, faceset_check_specs, one_person_advice
from swapline.quality_checks.gx_suite import validate_faces
from swapline.resources.analyzer import FaceAnalyzerResource
from swapline.resources.storage import StorageResource, artifact_input, artifact_metadata, recorded

SHEET_FACES = 32


def faceset_asset(project: Project, identity: str) -> dg.AssetsDefinition:
    settings = project.curation
    key = dg.AssetKey([identity, "faceset"])

    @dg.asset(
        key=key,
        ins={"faces": artifact_input(dg.AssetKey([identity, "aligned_faces"]))},
        group_name="curate",
        # The check thresholds are in the version: changing one re-evaluates the checks.
        code_version=code_version("faceset", {**settings.as_dict(), "layout": LAYOUT, "identity_distance": project.extraction.identity_distance,
                                              "checks": project.checks.model_dump(mode="json")}),
        check_specs=faceset_check_specs(key, project.checks),
        kinds={"parquet"},
        # Built when its sources' faces change, not at start: see on_change.
        automation_condition=on_change(start_missing=False),
    )
    def faceset(context: dg.AssetExecutionContext, storage: StorageResource,
                face_analyzer: FaceAnalyzerResource, faces: dict[str, Published]) -> dg.MaterializeResult:
        """All faces of this identity across its sources, near-duplicates removed by perceptual
        hash (the sharpest of each cluster kept) and blurry or tiny faces dropped, each reason
        counted; a contact sheet previews what the model will learn from. Only the faces' metadata
        is read to choose, and only for face files the previous version's candidates.parquet
        (every face considered) does not list; images are read for the few faces shown or newly
        embedded, and for the segments whose kept faces changed (the others are linked)."""
        store = storage.store()
        # Each source's faces at the version its aligned_faces materialization recorded.
        # Partitions are the local sources and the batches of URL sources' entries (swapline/collection.py).
        partitions = sorted(context.instance.get_dynamic_partitions(sources_partitions(identity).name))
        present = [source for source in partitions if source in faces]
        missing = [source for source in partitions if source not in faces]
        if not present:
            raise dg.Failure(f"No extracted faces for {identity}: every source is missing ({', '.join(missing)}).")
        if missing:
            context.log.warning(f"{identity}: sources without extracted faces (failed or not yet run): {missing}")
        files = [f for source in present for f in face_files(faces[source].path / FACES, faces[source].version)]
        current = recorded(context.instance, context.asset_key, None)  # our own last version: only to reuse what it shares by content
        current = current if current is not None and current.path.is_dir() else None
        # Only the faces of files the previous version did not list are read (ops/candidates.py).
        candidates = read_candidates(files, current.path / CANDIDATES if current else None)
        kept, stats = build_faceset([candidates], settings)
        # The per-face GX suite is Python-bound while the rest is mostly reading, writing and
        # hashing (which release the GIL): run beside it on the second core.
        checks_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faceset-gx")
        per_face = checks_pool.submit(validate_faces, kept.copy(), project.checks) if len(kept) else None  # its own copy: pandas is not thread-safe
        checks_pool.shutdown(wait=False)
        # A face's name by content: its source's extraction settings and its face_id.
        source_keys = {source: faces[source].manifest().get("cache_key", faces[source].version) for source in present}
        sample = sample_rows(kept, SAMPLE)
        ids, embeddings = sample_embeddings(
            face_analyzer.analyzer(project.extraction), sample.assign(content=rows_content(sample, source_keys)),
            cache_dir=store.location("_cache", "embeddings"),
            load=lambda rows: with_columns(rows, files, ["image", "landmarks", "matrix", "embedding"]))
        mix = purity(ids, embeddings, project.extraction.identity_distance)
        if mix["several_people"]:
            context.log.warning(f"{identity}: {mix['outlier_share']:.0%} of sampled faces look like someone else "
                                f"(e.g. {mix['outliers'][:3]}); {one_person_advice(mix['outliers'], bool(project.identities[identity].reference_photos))}")
        location = own_location(store, context)
        previous = previous_segments(current.path / FACESET if current else None)
        best = kept.sort_values("sharpness", ascending=False).head(SHEET_FACES)
        sheet_faces = rows_content(best, source_keys)
        sheet = _sheet(current, best, files, sheet_faces) if len(best) else None
        written: dict = {}

        def build(tmp: Path) -> None:
            written.update(write_faceset(tmp / FACESET, kept, files, previous))
            write_candidates(tmp / CANDIDATES, candidates, files)
            write_embeddings(tmp, ids, embeddings)  # the one embedding sample evaluation and conversion read
            if sheet:
                (tmp / "contact_sheet.png").write_bytes(sheet)
            write_manifest(tmp, {"identity": identity, "stats": stats, "missing_sources": missing, "purity": mix,
                                 "sheet_faces": sheet_faces})

        published = store.publish(location, build)
        context.log.info(f"{identity}: kept {stats['kept']} of {stats['raw']} faces")
        metadata = {**stats, **written, "sources": len(present), "missing_sources": len(missing), "outlier_share": mix["outlier_share"],
                    **artifact_metadata(published.path)}
        if sheet:
            metadata["preview"] = image_md(sheet, f"{identity} faceset")
        return dg.MaterializeResult(
            metadata=metadata,
            data_version=dg.DataVersion(published.version),
            check_results=evaluate_faceset(key, kept.drop(columns=["_file", "_row"]), stats, len(present), mix, project.checks,
                                           per_face.result() if per_face else None, bool(project.identities[identity].reference_photos)),
        )

    return faceset


def _sheet(current: Published | None, best, files, faces: list[str]) -> bytes:
    """The contact sheet of `best` (named `faces`): the previous version's when it shows the
    same faces, else drawn with the cells of the faces it shows cut from it (same pixels), so
    only the new faces' crops are read and decoded."""
    previous = None
    if current is not None and (current.path / "contact_sheet.png").is_file():
        previous = ((current.path / "contact_sheet.png").read_bytes(), current.manifest().get("sheet_faces", []))
        if previous[1] == faces:
            return previous[0]

    def crops(wanted: list[str]) -> dict:
        wanted_set = set(wanted)
        chosen = [face in wanted_set for face in faces]
        return dict(zip((face for face, keep in zip(faces, chosen) if keep),
                        map(decode_image, with_images(best[chosen], files)["image"])))

    return render_sheet(crops, faces, previous)
