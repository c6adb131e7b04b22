"""Where swapline keeps its artifacts (media, faces, checkpoints, videos), and how an asset
receives its upstream's artifact: as a declared input, at the version Dagster recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from swapline.ops.storage import ArtifactStore, Published

ARTIFACT = "artifact"  # the metadata entry every asset records: the folder of the version it published
INPUTS = "artifacts"  # resource key of ArtifactInputs: the input_manager_key of every swapline input


class StorageResource(dg.ConfigurableResource):
    """Root folder of swapline's atomic, content-addressed artifact store."""

    root: str = Field(description="Folder for all artifacts; set it with the SWAPLINE_HOME environment variable.")

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root)


def artifact_input(key: dg.AssetKey, partition_mapping: dg.PartitionMapping | None = None) -> dg.AssetIn:
    """An upstream artifact as an asset input, loaded by ArtifactInputs."""
    return dg.AssetIn(key=key, input_manager_key=INPUTS, partition_mapping=partition_mapping)


class ArtifactInputs(dg.ConfigurableIOManager):
    """Loads an upstream asset as the `Published` version its latest materialization recorded in
    Dagster (the `artifact` metadata entry), never as whatever a folder's pointer says now: what
    the run reads is what the UI's lineage shows, and a version published meanwhile by another
    run does not change it under this one. A partitioned upstream read by an unpartitioned asset
    arrives as {partition: Published} of its materialized partitions; read by an asset with the
    same partitions, as the one Published of that partition. Assets return MaterializeResult and
    write through ArtifactStore themselves, so nothing is ever stored here."""

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is not None:
            raise TypeError(f"{context.asset_key.to_user_string()}: swapline assets return MaterializeResult, not values")

    def load_input(self, context: dg.InputContext) -> Published | dict[str, Published]:
        key = context.asset_key
        if not context.has_asset_partitions:
            return _require(recorded(context.instance, key, None), key, None)
        partitions = context.asset_partition_keys
        if context.has_partition_key and len(partitions) == 1:
            return _require(recorded(context.instance, key, partitions[0]), key, partitions[0])
        found = {p: recorded(context.instance, key, p) for p in partitions}
        return {p: published for p, published in found.items() if published is not None}


def recorded(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None) -> Published | None:
    """The artifact version named by the latest materialization of `key` (and `partition`)."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=key, asset_partitions=[partition] if partition is not None else None), limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    entry = records[0].asset_materialization.metadata.get(ARTIFACT)
    return published_at(Path(str(entry.value))) if entry is not None else None


def published_at(folder: Path) -> Published:
    """The Published handle of a version folder `<location>/v-<version>`."""
    return Published(version=folder.name.removeprefix("v-"), path=folder)


def artifact_metadata(folder: Path) -> dict[str, dg.MetadataValue]:
    """The metadata entry ArtifactInputs reads back: the version folder an asset published."""
    return {ARTIFACT: dg.MetadataValue.path(str(folder))}


def _require(published: Published | None, key: dg.AssetKey, partition: str | None) -> Published:
    if published is None:
        where = key.to_user_string() + (f" partition {partition}" if partition is not None else "")
        raise dg.Failure(f"{where} has no recorded materialization with an artifact: materialize it first.")
    if not published.path.is_dir():
        raise dg.Failure(f"{key.to_user_string()}: the recorded version {published.path} is gone from disk "
                         "(removed by hand?): materialize it again.")
    return published
