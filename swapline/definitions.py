"""The code location Dagster loads (workspace.yaml). The project file is read when the
definitions are built, never at import: $SWAPLINE_PROJECT, else ./swapline.yaml."""

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    from swapline.build import build_definitions
    from swapline.project import load_project, project_path

    path = project_path()
    return build_definitions(load_project(path), path)
