"""Static tools see the layout: the stage folders reach `swapline.*` through symlinks, not package-dir.

pyright (and so pylance) cannot follow setuptools' package-dir mapping (pylance-release #5894), so
`swapline.ops.faces` went unresolved in editors. These tests run pyright itself on every module of
every stage folder, and check that the runtime import lands in the same files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LAYERS = ("assets", "ops", "resources", "quality_checks")


def _modules() -> list[str]:
    names = []
    for layer in LAYERS:
        names += [f"swapline.{layer}.{p.stem}" for p in sorted((REPO / layer).glob("*.py")) if p.stem != "__init__"]
    return names


@pytest.mark.parametrize("layer", LAYERS)
def test_stage_folder_is_a_relative_symlink(layer):
    # Relative, so the link survives a clone anywhere; a copied folder would fork the code.
    link = REPO / "swapline" / layer
    assert link.is_symlink() and os.readlink(link) == f"../{layer}"


def test_pyright_resolves_every_stage_module(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("".join(f"import {name}\n" for name in _modules()))
    # cwd=REPO: pyright's execution root is where it finds `swapline/` statically, as an editor
    # opened on the repo does; the editable install's import hook is invisible to it.
    proc = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable, str(probe)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.stdout.strip(), proc.stderr  # no JSON: pyright (or its node) did not start
    report = json.loads(proc.stdout)
    assert report["summary"]["filesAnalyzed"] == 1, report
    problems = [d["message"] for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert problems == []


def test_runtime_import_lands_in_the_stage_folder():
    # find_spec locates each module through the installed package without running it (no torch import).
    for name in _modules():
        layer, stem = name.split(".")[1:]
        origin = importlib.util.find_spec(name).origin
        assert Path(os.path.realpath(origin)) == REPO / layer / f"{stem}.py", name
