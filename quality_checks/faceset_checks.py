"""Checks on an identity's faceset: is there enough data to train on?"""

from __future__ import annotations

import dagster as dg

RECOMMENDED_FACES = 300  # a few hundred faces at least; 300-2,000 depending on variety


def faceset_check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            name="enough_faces",
            asset=key,
            description=(
                f"Warns when the identity has fewer than {RECOMMENDED_FACES} distinct faces after dedup and "
                "quality filtering. What to do: add videos or photos of this person, ideally with varied "
                "poses, expressions and lighting."
            ),
        ),
        dg.AssetCheckSpec(
            name="one_person",
            asset=key,
            description=(
                "Warns when a sample of the faceset's face embeddings shows more than one person (over 10% of "
                "faces far from the majority). What to do: add reference_photos for this identity so only "
                "this person is kept, or remove sources that show someone else."
            ),
        ),
    ]


def evaluate_faceset(key: dg.AssetKey, kept: int, sources: int, purity: dict) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            check_name="enough_faces",
            asset_key=key,
            passed=kept >= RECOMMENDED_FACES,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"faces": kept, "recommended": RECOMMENDED_FACES, "sources": sources},
        ),
        dg.AssetCheckResult(
            check_name="one_person",
            asset_key=key,
            passed=not purity["several_people"],
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"sampled": purity["sampled"], "outlier_share": purity["outlier_share"],
                      "outlier_face_ids": dg.MetadataValue.json(purity["outliers"])},
        ),
    ]
