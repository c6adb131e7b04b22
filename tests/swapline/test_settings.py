"""Every project-file setting, and the assets whose code version it enters: changing a setting
makes exactly those stale. Speed-only settings (threads, batch sizes of conversion, budgets)
enter none. The table is computed, by changing each field of the demo project in turn, and
compared with the committed tests/swapline/settings_snapshot.json."""

from __future__ import annotations

import copy
import difflib
import json
import os
import typing

import yaml
from pydantic import BaseModel

from swapline.build import build_assets
from swapline.project import Project, load_project
from tests.conftest import REPO

DEMO = REPO / "demo" / "swapline.yaml"
SNAPSHOT = REPO / "tests" / "swapline" / "settings_snapshot.json"
SPEED_ONLY = {"extraction.workers", "conversions.anna_as_ben.options.workers", "conversions.anna_as_ben.options.batch_size",
              "swaps.anna_ben.compile", "swaps.anna_ben.gpus", "swaps.anna_ben.ddp_backend", "swaps.anna_ben.checkpoint_minutes", "swaps.anna_ben.max_minutes", "collect_schedule"}
# Values a field is changed to when its type alone does not say (optional numbers, pairs).
CHANGED = {"max_frames": 7, "host_pause_seconds": 2.0, "start": 0.5, "end": 5.0, "max_minutes": 5.0, "target_loss": 0.01,
           "brightness_range": [30.0, 200.0], "collect_schedule": "0 4 * * *"}
SKIP = {"parent"}  # needs a second swap; its edge is in the graph snapshot


def code_versions(raw: dict, tmp_path) -> dict[str, str]:
    path = tmp_path / "swapline.yaml"
    path.write_text(yaml.safe_dump(raw))
    project = load_project(path)
    return {spec.key.to_user_string(): spec.code_version for asset in build_assets(project)
            for spec in getattr(asset, "specs", [])}  # source_files is observed: no code version


def other_value(name: str, info, value):
    annotation = info.annotation
    if name in CHANGED:
        return CHANGED[name]
    if typing.get_origin(annotation) is typing.Literal:
        return next(choice for choice in typing.get_args(annotation) if choice != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        bounds = {type(m).__name__: m for m in info.metadata}
        le = getattr(bounds.get("Le"), "le", None)
        step = 1 if isinstance(value, int) else 0.05
        return value + step if le is None or value + step <= le else value - step
    if isinstance(value, list):
        return value[1:]
    raise AssertionError(f"no other value known for {name}={value!r}: add it to CHANGED")


def fields(model: BaseModel, prefix: str):
    """(dotted path, field name, field info, current value) of every leaf setting."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from fields(value, f"{prefix}{name}.")
        elif name not in SKIP and not info.exclude:
            yield f"{prefix}{name}", name, info, value


def settings_table(tmp_path) -> dict[str, list[str]]:
    base_raw = yaml.safe_load(DEMO.read_text())
    for ident in base_raw["identities"].values():  # absolute media paths: the copy lives elsewhere
        for src in ident["sources"]:
            src["video"] = str(DEMO.parent / src["video"])
    for conv in base_raw["conversions"].values():
        conv["video"] = str(DEMO.parent / conv["video"])
    project = load_project(DEMO)
    base = code_versions(base_raw, tmp_path)
    sections = [(project.extraction, "extraction."), (project.curation, "curation."), (project.checks, "checks."),
                (project.swaps["anna_ben"], "swaps.anna_ben."), (project.conversions["anna_as_ben"].options, "conversions.anna_as_ben.options."),
                (project.downloads, "downloads.")]
    leaves = [leaf for model, prefix in sections for leaf in fields(model, prefix)]
    leaves += [("collect_schedule", "collect_schedule", Project.model_fields["collect_schedule"], project.collect_schedule)]
    table = {}
    for path, name, info, value in leaves:
        if path.startswith("swaps.anna_ben.") and name in ("a", "b"):
            continue  # identities, not settings
        raw = copy.deepcopy(base_raw)
        *parents, leaf = path.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = other_value(name, info, value)
        changed = code_versions(raw, tmp_path)
        table[path] = sorted(key for key in base if changed.get(key) != base[key])
    return table


def test_each_setting_enters_the_code_versions_it_should(tmp_path):
    table = settings_table(tmp_path)
    assert table["extraction.face_size"], "the face crop size must make the faces stale"
    for path in SPEED_ONLY | {p for p in table if p.startswith("downloads.")}:  # how, not what, is downloaded
        assert table[path] == [], f"{path} changes only speed, but changing it makes {table[path]} stale"
    now = json.dumps(table, indent=1, sort_keys=True) + "\n"
    if os.environ.get("SWAPLINE_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(now)
    diff = "".join(difflib.unified_diff(SNAPSHOT.read_text().splitlines(True), now.splitlines(True), "snapshot", "now"))
    assert not diff, f"Which assets a setting makes stale changed; if intended, re-run with SWAPLINE_UPDATE_SNAPSHOT=1:\n{diff}"
