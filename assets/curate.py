"""curate: one faceset per identity, the union of its sources' faces, deduplicated and filtered."""


from pathlib import Path

import dagster as dg

from swapline.assets.common import code_version, image_md, on_change, own_location
from swapline.ops.faceset import build_faceset, contact_sheet
from swapline.ops.facetable import decode_image, read_faces, write_table
from swapline.ops.identity import purity, sample_embeddings, write_embeddings
from swapline.ops.storage import Published, write_manifest
from swapline.project import Project
from swapline.quality_checks.faceset_checks import evaluate_faceset, faceset_check_specs
from swapline.resources.analyzer import FaceAnalyzerResource
from swapline.resources.storage import StorageResource, artifact_input

SHEET_FACES = 32


def faceset_asset(project: Project, identity: str) -> dg.AssetsDefinition:
    settings = project.curation
    key = dg.AssetKey([identity, "faceset"])
    source_keys = list(project.source_keys(identity))

    @dg.asset(
        key=key,
        ins={"faces": artifact_input(dg.AssetKey([identity, "aligned_faces"]))},
        group_name="curate",
        # The check thresholds are in the version: changing one re-evaluates the checks.
        code_version=code_version("faceset", {**settings.as_dict(), "identity_distance": project.extraction.identity_distance,
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
        counted; a contact sheet previews what the model will learn from."""
        store = storage.store()
        # Each source's faces at the version its aligned_faces materialization recorded.
        tables = [read_faces(faces[source].path / "faces.parquet") for source in source_keys if source in faces]
        missing = [source for source in source_keys if source not in faces]
        if not tables:
            raise dg.Failure(f"No extracted faces for {identity}: every source is missing ({', '.join(missing)}).")
        if missing:
            context.log.warning(f"{identity}: sources without extracted faces (failed or not yet run): {missing}")
        kept, stats = build_faceset(tables, settings)
        ids, embeddings = sample_embeddings(face_analyzer.analyzer(project.extraction), kept,
                                            cache_dir=store.location("_cache", "embeddings"))
        mix = purity(ids, embeddings, project.extraction.identity_distance)
        if mix["several_people"]:
            context.log.warning(f"{identity}: {mix['outlier_share']:.0%} of sampled faces look like someone else "
                                f"(e.g. {mix['outliers'][:3]}); add reference_photos to keep only this person")
        best = kept.sort_values("sharpness", ascending=False).head(SHEET_FACES)
        sheet = contact_sheet([decode_image(b) for b in best["image"]]) if len(best) else None

        def build(tmp: Path) -> None:
            write_table(tmp / "faceset.parquet", kept)
            write_embeddings(tmp, ids, embeddings)  # the one embedding sample evaluation and conversion read
            if sheet:
                (tmp / "contact_sheet.png").write_bytes(sheet)
            write_manifest(tmp, {"identity": identity, "stats": stats, "missing_sources": missing, "purity": mix})

        published = store.publish(own_location(store, context), build)
        context.log.info(f"{identity}: kept {stats['kept']} of {stats['raw']} faces")
        metadata = {**stats, "sources": len(tables), "missing_sources": len(missing), "outlier_share": mix["outlier_share"],
                    "artifact": dg.MetadataValue.path(str(published.path))}
        if sheet:
            metadata["preview"] = image_md(sheet, f"{identity} faceset")
        return dg.MaterializeResult(
            metadata=metadata,
            data_version=dg.DataVersion(published.version),
            check_results=evaluate_faceset(key, kept, stats, len(tables), mix, project.checks),
        )

    return faceset
