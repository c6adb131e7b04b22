"""`swapline gc` against a real Dagster instance: a tiny asset publishes through ArtifactStore
and records its `artifact` folder, as every swapline asset does; gc removes the versions of all
but the last N materializations, and never one a run in progress may read, a pointer names, a
cache holds or a folder Dagster does not know."""

# No `from __future__ import annotations`: Dagster reads the assets' Config annotation as a type.
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from swapline.cli import main
from swapline.ops.storage import ArtifactStore
from swapline.resources.storage import ArtifactInputs, StorageResource, artifact_input, artifact_metadata
from swapline.runner import write_instance_yaml

PAYLOAD = dg.AssetKey(["test", "payload"])
SIZE = 300 * 1024  # bytes of each version's one file: 300 KiB


class Text(dg.Config):
    text: str


@dg.asset(key=PAYLOAD, partitions_def=dg.StaticPartitionsDefinition(["a", "b"]))
def payload(context: dg.AssetExecutionContext, config: Text, storage: StorageResource) -> dg.MaterializeResult:
    store = storage.store()
    location = store.location(*PAYLOAD.path, context.partition_key)
    published = store.publish(location, lambda folder: (folder / "data.txt").write_text(config.text * SIZE))
    return dg.MaterializeResult(metadata=artifact_metadata(published.path), data_version=dg.DataVersion(published.version))


# The reader run holds here until the test lets it go: it is STARTED meanwhile.
GATE, READ = threading.Event(), {}


@dg.asset(ins={"payload": artifact_input(PAYLOAD)})
def reader(payload: dict) -> dg.MaterializeResult:
    READ["loaded"] = payload["a"]
    assert GATE.wait(120), "the test never let the reader go"
    READ["text"] = (payload["a"].path / "data.txt").read_text()
    return dg.MaterializeResult()


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """A DAGSTER_HOME on disk (the CLI opens it itself) and an artifact root; yields (instance, store)."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("SWAPLINE_HOME", str(tmp_path / "artifacts"))
    write_instance_yaml(tmp_path / "dagster_home")
    GATE.clear()
    READ.clear()
    with dg.DagsterInstance.get() as instance:
        yield instance, ArtifactStore(tmp_path / "artifacts")


def materialize(instance, store: ArtifactStore, partition: str, text: str) -> Path:
    """One materialization; the version folder it recorded."""
    result = dg.materialize([payload], instance=instance, partition_key=partition,
                            resources={"storage": StorageResource(root=str(store.root))},
                            run_config=dg.RunConfig({"test__payload": Text(text=text)}))
    assert result.success
    return Path(str(result.asset_materializations_for_node("test__payload")[0].metadata["artifact"].value))


def gc(capsys, *args: str) -> str:
    assert main(["gc", "--grace-minutes", "0", *args]) == 0
    return capsys.readouterr().out


def recorded_folders(instance, partition: str, limit: int) -> list[Path]:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=PAYLOAD, asset_partitions=[partition]),
                                              limit=limit).records
    return [Path(str(r.asset_materialization.metadata["artifact"].value)) for r in records]


def test_gc_keeps_the_last_n_materializations_and_leaves_the_rest_of_the_tree_alone(homes, capsys):
    instance, store = homes
    versions = [materialize(instance, store, "a", text) for text in "1234"]
    only_b = materialize(instance, store, "b", "x")
    untouchable = [store.location("_cache", "embeddings", "v-cached"), store.location(*PAYLOAD.path, "a", "_work", "v-step"),
                   store.location("elsewhere", "faceset", "v-unknown")]  # the last: no materialization names it
    for folder in untouchable:
        folder.mkdir(parents=True)
        (folder / "f.bin").write_bytes(b"x" * 10)

    assert main(["gc", "--keep", "2", "--dry-run"]) == 0  # default grace: all just published
    assert "nothing to free (dry run)" in capsys.readouterr().out

    # The entry point itself, in its own process.
    dry = subprocess.run([sys.executable, "-m", "swapline.cli", "gc", "--keep", "2", "--dry-run", "--grace-minutes", "0"],
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert (f"test/payload/a: would free 2 version(s), {2 * SIZE:,} bytes (600.0 KiB): "
            f"{', '.join(sorted(v.name for v in versions[:2]))}") in dry.stdout, dry.stdout
    assert "elsewhere/faceset: left alone: no materialization in this Dagster instance names its versions" in dry.stdout
    assert f"== dry run: would free {2 * SIZE:,} bytes (600.0 KiB) in 2 version(s) of 1 folder(s)" in dry.stdout
    assert all(v.is_dir() for v in versions)  # a dry run deletes nothing

    out = gc(capsys, "--keep", "2")
    assert f"== freed {2 * SIZE:,} bytes (600.0 KiB) in 2 version(s) of 1 folder(s)" in out, out
    assert [v.is_dir() for v in versions] == [False, False, True, True]
    assert recorded_folders(instance, "a", 2) == versions[:1:-1]
    for folder in recorded_folders(instance, "a", 2):
        assert (folder / "data.txt").read_text() in ("3" * SIZE, "4" * SIZE)
    assert store.current(store.location(*PAYLOAD.path, "a")).path == versions[-1]
    assert only_b.is_dir() and all((f / "f.bin").is_file() for f in untouchable)
    assert not [p for p in versions[0].parent.iterdir() if p.name.startswith(".trash-")]
    assert "nothing to free" in gc(capsys, "--keep", "2")


def test_gc_keeps_what_a_run_in_progress_reads_and_what_was_materialized_since_it_began(homes, capsys):
    instance, store = homes
    first, read = (materialize(instance, store, "a", text) for text in "12")
    run = threading.Thread(target=lambda: READ.setdefault("ok", dg.materialize(
        [payload, reader], selection=[dg.AssetKey("reader")], instance=instance,
        resources={"storage": StorageResource(root=str(store.root)), "artifacts": ArtifactInputs()}).success))
    run.start()
    try:
        deadline = time.monotonic() + 60
        while "loaded" not in READ and time.monotonic() < deadline and run.is_alive():
            time.sleep(0.05)
        assert READ["loaded"].path == read  # the run read version 2 and holds on to it
        during = materialize(instance, store, "a", "3")  # materialized after the run began
        latest = [materialize(instance, store, "a", text) for text in "45"]

        out = gc(capsys, "--keep", "2")
        assert f"test/payload/a: freed 1 version(s), {SIZE:,} bytes (300.0 KiB): {first.name}" in out, out
        assert not first.is_dir() and read.is_dir() and during.is_dir() and all(v.is_dir() for v in latest)
    finally:
        GATE.set()
        run.join(timeout=120)
    assert READ["ok"] and READ["text"] == "2" * SIZE  # it read the whole version after gc ran

    out = gc(capsys, "--keep", "2")  # the run is over: what it held goes
    assert f"test/payload/a: freed 2 version(s), {2 * SIZE:,} bytes (600.0 KiB): " in out, out
    assert not read.is_dir() and not during.is_dir() and all(v.is_dir() for v in latest)


def test_a_materialization_without_an_artifact_entry_is_mapped_by_its_paths(tmp_path):
    """A model recording only its checkpoint (or a conversion only its video) still names its version."""
    from swapline.gc import version_folder

    root = tmp_path / "artifacts"
    version = root / "anna_ben" / "face_model" / "v-123"
    assert version_folder({"step": dg.MetadataValue.int(40), "checkpoint": dg.MetadataValue.path(str(version / "checkpoint"))},
                          root) == version
    assert version_folder({"artifact": dg.MetadataValue.path(str(version))}, root) == version
    assert version_folder({"elsewhere": dg.MetadataValue.path(str(tmp_path / "v-9" / "x"))}, root) is None  # not under root
    assert version_folder({"work": dg.MetadataValue.path(str(root / "anna_ben" / "face_model" / "_work"))}, root) is None
