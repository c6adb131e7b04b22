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
        )
    ]


def evaluate_faceset(key: dg.AssetKey, kept: int, sources: int) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            check_name="enough_faces",
            asset_key=key,
            passed=kept >= RECOMMENDED_FACES,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"faces": kept, "recommended": RECOMMENDED_FACES, "sources": sources},
        )
    ]
