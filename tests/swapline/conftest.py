"""Fixtures shared by the CLI-level tests (status, refresh, run)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def photos(media_dir, tmp_path):
    """A photo-folder source of two real demo stills."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("single_face.jpg", "45-m7-di-ph.jpg"):
        shutil.copy(media_dir / name, folder / name)
    return folder
