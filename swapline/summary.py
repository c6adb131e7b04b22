"""What `swapline run` ends with, read from what its runs recorded in the Dagster instance (each
materialization's metadata and each asset check evaluation of those runs), never worked out
again: warnings first (a source that gave no face, a conversion without sound or with fewer bits
than its source, a failed check, a failed step), then per source what extraction used and what
it did not use (by name), then per asset whether it was built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import dagster as dg

ET = dg.DagsterEventType
Where = tuple[dg.AssetKey, str | None]  # an asset and its partition (None: unpartitioned)
SHOWN = 5  # names shown per list in the terminal; the metadata keeps up to 20


@dataclass
class Recorded:
    """What some runs recorded: the metadata (plain values) of each asset partition's latest
    materialization among them, and the check evaluations of each, by check name."""

    metadata: dict[Where, dict[str, Any]] = field(default_factory=dict)
    checks: dict[Where, dict[str, Any]] = field(default_factory=dict)


def recorded(instance: dg.DagsterInstance, run_ids: Iterable[str]) -> Recorded:
    """Read the materializations and check evaluations of `run_ids` (in that order) from the instance."""
    found = Recorded()
    for run_id in dict.fromkeys(run_ids):
        for entry in instance.all_logs(run_id, of_type={ET.ASSET_MATERIALIZATION, ET.ASSET_CHECK_EVALUATION}):
            if entry.dagster_event_type == ET.ASSET_MATERIALIZATION:
                event = entry.asset_materialization
                found.metadata[(event.asset_key, event.partition)] = {k: v.value for k, v in event.metadata.items()}
            else:
                check = entry.asset_check_evaluation
                found.checks.setdefault((check.asset_key, check.partition), {})[check.check_name] = check
    return found


def latest_metadata(instance: dg.DagsterInstance, wheres: Iterable[Where]) -> dict[Where, dict[str, Any]]:
    """The metadata (plain values) of each asset partition's latest materialization, whichever
    run made it (for `swapline report`); partitions never materialized are left out."""
    found = {}
    for key, partition in wheres:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1).records
        if records and records[0].asset_materialization is not None:
            found[(key, partition)] = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
    return found


def summary_lines(instance: dg.DagsterInstance, outcomes: list) -> list[str]:
    """The run's closing report; `outcomes` are the runner's (swapline/runner.py Outcome), one
    per asset partition it tried to build. Short on purpose: a line per warning, per source and
    per asset (its partitions counted), the details being in the metadata and `swapline report`."""
    if not outcomes:
        return []
    rec = recorded(instance, [o.run_id for o in outcomes])
    warnings = warning_lines(rec, outcomes)
    lines = [f"== warnings ({len(warnings)})" if warnings else "== warnings: none"] + [f"  ! {w}" for w in warnings]
    sources = [(o.key.path[0], o.partition) for o in outcomes
               if o.partition and o.key.path[-1] == "aligned_faces" and (o.key, o.partition) in rec.metadata]
    for identity, partition in sources:  # a source whose extraction failed is among the warnings
        first, *rest = source_lines(identity, partition, rec.metadata)
        lines += [f"== source {first}", *rest]
    states = [_state(o) for o in outcomes]
    lines.append("== assets: " + ", ".join(f"{states.count(s)} {s}" for s in ("ok", "failed", "skipped") if s in states))
    for key in dict.fromkeys(o.key for o in outcomes):
        mine = [o for o in outcomes if o.key == key]
        checks = [c for o in mine for c in rec.checks.get((key, o.partition), {}).values()]
        lines.append(f"  {asset_line(key, [_state(o) for o in mine], checks)}")
    return lines


def label(key: dg.AssetKey, partition: str | None) -> str:
    return key.to_user_string() + (f"[{partition}]" if partition else "")


def _state(outcome) -> str:
    return "ok" if outcome.ok else "skipped" if outcome.reason.startswith("skipped: ") else "failed"


def warning_lines(rec: Recorded, outcomes: list) -> list[str]:
    """A failed step (its reason; skipped ones follow from it), a source that gave no face, a
    conversion that lost its sound or bits, and per asset partition the checks that failed."""
    out = [f"{label(o.key, o.partition)} failed: {o.reason}" for o in outcomes if _state(o) == "failed" and not o.blocked]
    for (key, partition), meta in rec.metadata.items():
        if key.path[-1] == "aligned_faces" and meta.get("faces") == 0:
            out.append(f"{key.path[0]}/{partition} gave 0 faces: {found_words(meta)}")
        if key.path[-1] == "converted_video" and meta.get("bit_depth_in", 8) > meta.get("bit_depth_out", 8):
            out.append(f"{key.to_user_string()}: the {meta['bit_depth_in']}-bit source ({meta.get('pix_fmt_in')}) became "
                       f"{meta['bit_depth_out']}-bit ({meta.get('pix_fmt_out')}) in the output")
    for (key, partition), checks in rec.checks.items():
        failed = [check for _, check in sorted(checks.items()) if not check.passed]
        if any(check.check_name == "audio_kept" for check in failed):
            out.append(f"{label(key, partition)}: the output has no audio although the source has (check audio_kept failed)")
            failed = [check for check in failed if check.check_name != "audio_kept"]
        if failed:
            out.append(f"{label(key, partition)}: failed " + "; ".join(f"{check.check_name} ({check.severity.value}"
                                                                     + (f": {_short(detail)})" if (detail := _detail(check)) else ")")
                                                                     for check in failed))
    return out


def _detail(check) -> str:
    return (_text(check.metadata.get("advice")) or check.description or _missing(check.metadata) or numbers(check.metadata))


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def found_words(meta: dict[str, Any]) -> str:
    """Where the faces went, e.g. '13 faces in 5 photos: 6 kept, 7 rejected as someone else'."""
    unit = "photo" if meta.get("source_kind") == "photos" else "frame"
    rejected, small = meta.get("rejected_identity", 0), meta.get("too_small", 0)
    found = meta.get("faces", 0) + rejected + small
    parts = [f"{meta.get('faces', 0)} kept"]
    parts += [f"{rejected} rejected as someone else"] if rejected else []
    parts += [f"{small} below min_face"] if small else []
    parts += [f"{meta.get('no_face', 0)} {plural(unit, meta.get('no_face', 0))} without any face"] if meta.get("no_face") else []
    return f"{found} {plural('face', found)} in {meta.get('frames', 0)} {plural(unit, meta.get('frames', 0))}: {', '.join(parts)}"


def source_lines(identity: str, partition: str, metadata: dict[Where, dict[str, Any]]) -> list[str]:
    """One source: what it gave, then what was not used, each kind with its count and first names."""
    meta = metadata.get((dg.AssetKey([identity, "aligned_faces"]), partition))
    if meta is None:
        return [f"{identity}/{partition}: no faces recorded (its extraction did not finish)"]
    lines = [f"{identity}/{partition}: {found_words(meta)}"]
    unit = "photo" if meta.get("source_kind") == "photos" else "frame"
    not_used = [
        (meta.get("no_face", 0), f"{plural(unit, meta.get('no_face', 0))} without a face", meta.get("no_face_files", [])),
        (meta.get("too_small", 0), f"{plural('face', meta.get('too_small', 0))} narrower than extraction.min_face",
         meta.get("too_small_files", [])),
        (meta.get("rejected_identity", 0), f"{plural('face', meta.get('rejected_identity', 0))} rejected as someone else{_margin(meta.get('identity_margin'))}",
         [f"{r['file']} {r['distance']:.2f}" for r in meta.get("rejected_faces", [])]),
        (meta.get("skipped_files", 0), f"{plural('file', meta.get('skipped_files', 0))} skipped", [_skipped(s) for s in meta.get("skipped_reasons", [])]),
    ]
    media = metadata.get((dg.AssetKey([identity, "source_media"]), partition)) or {}
    not_used.append((media.get("ignored_files", 0), f"{plural('file', media.get('ignored_files', 0))} left out (not photos)",
                     media.get("ignored_names", [])))
    for count, what, names in not_used:
        if count:
            more = ", ..." if len(names) > SHOWN else ""  # the metadata holds the first 20
            lines.append(f"  not used: {count} {what}" + (f" ({'; '.join(map(str, names[:SHOWN]))}{more})" if names else ""))
    return lines


def asset_line(key: dg.AssetKey, states: list[str], checks: list) -> str:
    """An asset: its partitions ok, failed or skipped, and how its checks came out."""
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("ok", "failed", "skipped") if s in states)
    line = f"{key.to_user_string():<28} {counts if len(states) > 1 else states[0]}"
    if checks:
        failed = sorted(f"{c.check_name} {c.severity.value}" for c in checks if not c.passed)
        line += f"; checks: {len(checks) - len(failed)} passed" + (f", failed: {', '.join(failed)}" if failed else "")
    return line


def _margin(margin: Any) -> str:
    """', distance 0.71-0.93 (median 0.80) over threshold 0.6, kept 0.35-0.52': how far the filter's calls were from its threshold."""
    if not isinstance(margin, dict) or "rejected" not in margin:
        return ""
    rejected, kept = margin["rejected"], margin.get("kept")
    text = f", distance {rejected['min']:.2f}-{rejected['max']:.2f} (median {rejected['median']:.2f}) over threshold {margin['threshold']:g}"
    return text + (f", kept {kept['min']:.2f}-{kept['max']:.2f}" if kept else "")


def _skipped(skipped: dict[str, Any]) -> str:
    """'broken.jpg: not an image ...': the file's name, and the reason without its full path."""
    where = str(skipped.get("photo") or skipped.get("file") or "?")
    return f"{Path(where).name}: {str(skipped.get('reason', '')).removeprefix(f'{where}: ')}"


def _missing(metadata: dict[str, Any]) -> str:
    """'missing: faces turned to her left, ...' from a pose check's list of missing bins in words."""
    missing = [m for m in getattr(metadata.get("missing_bins"), "value", None) or [] if isinstance(m, str)]
    return f"missing faces {'; '.join(missing[:3])}" + (", ..." if len(missing) > 3 else "") if missing else ""


def _text(value: Any) -> str:
    value = getattr(value, "value", value)
    return value if isinstance(value, str) else ""


def numbers(metadata: dict[str, Any]) -> str:
    """The plain numbers of a check's metadata, e.g. 'faces=13, min_faces=10'."""
    values = {k: getattr(v, "value", v) for k, v in metadata.items()}
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in values.items() if isinstance(v, (int, float, str)) and len(str(v)) < 60)


def plural(word: str, n: int) -> str:
    return word if n == 1 else f"{word}s"
