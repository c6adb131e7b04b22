"""`swapline report`: per identity whether its data is enough and what is missing, per swap its
model checks, and first of all every identity whose consent was withdrawn or expired, with the
outputs made from it that still exist (for the owner to review and remove)."""

from __future__ import annotations


def report_lines(project, instance, store) -> list[str]:
    """The data-sufficiency report: per identity its faces and each check's outcome with what
    is missing; per swap its model checks. Counts come from the faceset manifests, outcomes
    from the latest check evaluations in the Dagster instance."""
    import dagster as dg

    from swapline.quality_checks.faceset_checks import failed_blocking_checks, latest_evaluation

    lines = withdrawn_lines(project, instance)
    for identity in project.identities:
        published = store.current_or_none(store.location(identity, "faceset"))
        if published is None:
            lines += [f"{identity}: no faceset yet (run `swapline run`)", ""]
            continue
        stats = published.manifest()["stats"]
        lines.append(f"{identity}: {stats['kept']} faces kept of the {stats['raw']} extraction accepted "
                     f"(dropped: {stats['dropped_duplicate']} near-duplicates, {stats['dropped_blurry']} blurry, "
                     f"{stats['dropped_small']} too small); per source, what extraction found and left out:")
        lines += extraction_lines(identity, instance)
        blocked = failed_blocking_checks(instance, identity)
        lines += _check_lines(dg.AssetKey([identity, "faceset"]), instance, latest_evaluation)
        if blocked:
            lines.append(f"  => swaps with {identity} will not train: failed {', '.join(blocked)}; add faces and re-run")
        lines.append("")
    for name in project.swaps:
        lines.append(f"swap {name}:")
        lines += _check_lines(dg.AssetKey([name, "face_model"]), instance, latest_evaluation) or ["  no model checks yet"]
    for name in project.conversions:
        lines += conversion_lines(name, instance, latest_evaluation)
    return lines


def extraction_lines(identity: str, instance) -> list[str]:
    """Per source of `identity`, what extraction found and what it did not use (files or frames
    without a face, faces too small or of someone else, files skipped), from its latest
    aligned_faces materialization: the faceset's counts start after these."""
    import dagster as dg

    from swapline.assets.common import sources_partitions
    from swapline.summary import latest_metadata, source_lines

    partitions = sorted(instance.get_dynamic_partitions(sources_partitions(identity).name))
    metadata = latest_metadata(instance, [(dg.AssetKey([identity, stage]), p) for p in partitions
                                          for stage in ("source_media", "aligned_faces")])
    return [f"  {line}" for p in partitions for line in source_lines(identity, p, metadata)]


def conversion_lines(name: str, instance, latest_evaluation) -> list[str]:
    """A conversion's target checks (coverage of the target's faces by the faceset) and its
    converted video's: the checks and the output's key numbers."""
    import dagster as dg

    from swapline.summary import latest_metadata

    target, video = dg.AssetKey([name, "target_faces"]), dg.AssetKey([name, "converted_video"])
    lines = [f"conversion {name}:"]
    lines += _check_lines(target, instance, latest_evaluation) or ["  no target checks yet"]
    meta = latest_metadata(instance, [(video, None)]).get((video, None))
    if meta is None:
        return lines + ["  no converted video yet", ""]
    lines.append(f"  output: {meta.get('frames')} frames, {meta.get('swapped')} swapped, audio {'yes' if meta.get('audio') else 'NO'}, "
                 f"{meta.get('bit_depth_out', '?')}-bit {meta.get('pix_fmt_out', '')} from a {meta.get('bit_depth_in', '?')}-bit source, "
                 f"C2PA {meta.get('c2pa', '?')}, watermark {meta.get('watermark_bits_matched', '?')}/64 bits")
    return lines + (_check_lines(video, instance, latest_evaluation) or ["  no video checks yet"]) + [""]


def _check_lines(key, instance, latest_evaluation) -> list[str]:
    import dagster as dg

    lines = []
    for name in _check_names(key):
        evaluation = latest_evaluation(instance, dg.AssetCheckKey(key, name))
        if evaluation is None:
            continue
        outcome = "ok" if evaluation.passed else evaluation.severity.value
        lines.append(f"  {name:<24} {outcome:<5} {_detail(evaluation.metadata)}")
        if evaluation.passed:
            continue
        if name == "pose_coverage" and key.path[-1] == "faceset":
            lines += [f"    missing: faces {bin_}" for bin_ in evaluation.metadata["missing_bins"].value]
        elif evaluation.description:  # the target's and the video's checks say what is wrong in words
            lines.append(f"    {evaluation.description}")
    return lines


def _check_names(key) -> list[str]:
    from swapline.project import Checks
    from swapline.quality_checks.faceset_checks import faceset_check_specs
    from swapline.quality_checks.model_checks import model_check_specs
    from swapline.quality_checks.video_checks import video_check_specs

    kind = key.path[-1]
    if kind == "target_faces":
        return ["pose_coverage", "lighting_coverage"]  # quality_checks/target_checks.py
    specs = (faceset_check_specs(key, Checks()) if kind == "faceset" else video_check_specs(key) if kind == "converted_video"
             else model_check_specs(key))
    return [spec.name for spec in specs]


def _detail(metadata: dict) -> str:
    """The plain numbers of a result (images, lists and tables stay in the UI)."""
    values = {k: v.value for k, v in metadata.items() if isinstance(v.value, (int, float, str)) and k not in ("missing", "histogram", "preview")}
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def withdrawn_lines(project, instance) -> list[str]:
    """For each identity whose consent no longer holds: the record, why, and the latest recorded
    outputs that used it (its faceset, the models of its swaps, their conversions)."""
    import dagster as dg

    from swapline.ops.consent import lapsed_identities
    from swapline.resources.storage import recorded

    lapsed = lapsed_identities({who: ident.consent for who, ident in project.identities.items()})
    lines = []
    for who, why in lapsed.items():
        swaps = [name for name, swap in project.swaps.items() if who in (swap.a, swap.b)]
        keys = [dg.AssetKey([who, "faceset"]), *(dg.AssetKey([s, "face_model"]) for s in swaps),
                *(dg.AssetKey([c, "converted_video"]) for c, conv in project.conversions.items() if conv.swap in swaps)]
        outputs = [(key, published) for key in keys if (published := recorded(instance, key, None)) is not None]
        lines.append(f"{who}: CONSENT {why.upper()} ({project.identities[who].consent.reference()}): "
                     f"not trained or converted any more; {len(outputs)} existing output(s) made with it:")
        lines += [f"  {key.to_user_string():<28} {published.path}" + ("" if published.path.exists() else " (already removed)")
                  for key, published in outputs]
        lines.append("")
    return lines
