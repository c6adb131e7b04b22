"""Build the Dagster definitions for one project file (an asset factory: see assets/extract.py)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from swapline.assets.automation import (
    automation_sensor,
    collection_schedule,
    dead_runs_sensor,
    project_sync_sensor,
    source_watch_sensor,
)
from swapline.assets.collect import source_files_asset, source_media_asset, target_video_asset
from swapline.assets.convert import converted_video_asset
from swapline.assets.curate import faceset_asset
from swapline.assets.extract import aligned_faces_asset, frames_asset
from swapline.assets.target import target_faces_asset
from swapline.assets.train import face_model_asset
from swapline.executors import executor_from_env
from swapline.project import Project
from swapline.quality_checks.target_checks import target_coverage_checks
from swapline.resources.analyzer import FaceAnalyzerResource
from swapline.resources.device import TorchDevice
from swapline.resources.downloader import Downloader
from swapline.resources.signer import Signer
from swapline.resources.storage import INPUTS, ArtifactInputs, StorageResource

STORAGE_ENV = "SWAPLINE_HOME"
# Your own C2PA signing certificate (PEM chain, signing certificate first), its unencrypted key,
# and the root a viewer trusts; unset: swapline's local CA under $SWAPLINE_HOME/signing.
SIGNING_ENV = {"cert_chain": "SWAPLINE_SIGNING_CERT", "private_key": "SWAPLINE_SIGNING_KEY",
               "trust_anchors": "SWAPLINE_SIGNING_ANCHORS"}


def build_assets(project: Project) -> list[dg.AssetsDefinition | dg.SourceAsset]:
    """Every asset of the project. `<identity>/source_files` is observed, never materialized."""
    assets: list[dg.AssetsDefinition | dg.SourceAsset] = []
    for identity in project.identities:
        assets += [
            source_files_asset(project, identity),
            source_media_asset(project, identity),
            frames_asset(project, identity),
            aligned_faces_asset(project, identity),
            faceset_asset(project, identity),
        ]
    for name in project.conversions:
        assets += [target_video_asset(project, name), target_faces_asset(project, name), target_coverage_checks(project, name)]
    assets += [face_model_asset(project, name) for name in project.swaps]
    assets += [converted_video_asset(project, name) for name in project.conversions]
    return assets


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "storage": StorageResource(root=dg.EnvVar(STORAGE_ENV)),
        "torch_device": TorchDevice(),
        "face_analyzer": FaceAnalyzerResource(),
        "downloader": Downloader(),
        "signer": signer_resource(),
        INPUTS: ArtifactInputs(),
    }


def signer_resource() -> Signer:
    """The signer, with the certificate settings bound to their environment variables (resolved
    by Dagster when a run starts, never stored in the definitions) for those that are set when the
    definitions are built: Dagster refuses an EnvVar that is unset, even for an optional field."""
    return Signer(**{field: dg.EnvVar(env) for field, env in SIGNING_ENV.items() if os.environ.get(env)})


def build_definitions(project: Project, project_file: Path, resources: dict | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=build_assets(project),
        sensors=[project_sync_sensor(project_file), source_watch_sensor(project_file), dead_runs_sensor(), automation_sensor()],
        schedules=[collection_schedule(project, identity) for identity in project.identities],
        resources=resources or default_resources(),
        executor=executor_from_env(),  # SWAPLINE_EXECUTOR: in-process, multiprocess or Celery (swapline/executors.py)
    )
