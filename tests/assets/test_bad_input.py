"""A photo folder full of awkward files: each bad one skipped with its reason, the rest used,
and nothing already extracted lost."""

from __future__ import annotations

import dagster as dg
import numpy as np
from PIL import Image

from swapline.build import build_assets, default_resources
from swapline.ops.facetable import read_faces
from swapline.ops.storage import ArtifactStore
from tests.conftest import CONSENT

STAGES = ("source_media", "frames", "aligned_faces")


def make_folder(media, folder):
    folder.mkdir()
    face = Image.open(media / "single_face.jpg").convert("RGB")
    face.save(folder / "good.jpg")
    face.convert("L").save(folder / "gray.png")
    face.convert("CMYK").save(folder / "cmyk.jpg")
    face.convert("RGBA").save(folder / "rgba.png")
    sixteen = (np.asarray(face.convert("L"), np.uint16) * 257).astype(np.uint16)
    Image.fromarray(sixteen).save(folder / "deep.png")  # 16-bit greyscale PNG
    rotated = face.transpose(Image.Transpose.ROTATE_90)  # stored sideways, EXIF says turn it back
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(folder / "phone.jpg", exif=exif)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not an image")
    (folder / "cut.jpg").write_bytes((folder / "good.jpg").read_bytes()[:3000])
    face.resize((20, 12)).save(folder / "tiny.png")
    return {"empty.jpg", "notes.jpg", "cut.jpg", "tiny.png"}


def face_ids(store, partition) -> set[str]:
    published = store.current(store.location("ben", "aligned_faces", partition))
    return set(read_faces(published.path / "faces.parquet", with_images=False)["face_id"])


def materialize(project, instance, partition):
    keys = [dg.AssetKey(["ben", stage]) for stage in STAGES]
    return dg.materialize(build_assets(project), selection=keys, partition_key=partition, instance=instance,
                          resources=default_resources(), raise_on_error=False)


def test_bad_photos_are_skipped_with_reasons(media_dir, swapline_home, instance, write_project, tmp_path):
    folder = tmp_path / "photos"
    bad = make_folder(media_dir, folder)
    project, _ = write_project({"identities": {"ben": {"consent": CONSENT, "sources": [{"photos": str(folder)}]}},
                                "extraction": {"face_size": 96}})
    (partition,) = project.source_keys("ben")
    instance.add_dynamic_partitions("ben_sources", [partition])
    result = materialize(project, instance, partition)
    assert result.success

    frames_meta = result.asset_materializations_for_node("ben__frames")[0].metadata
    reasons = frames_meta["skipped_reasons"].value
    assert {r["photo"].rsplit("/", 1)[-1] for r in reasons} == bad
    assert all(r["reason"] for r in reasons)
    faces_meta = result.asset_materializations_for_node("ben__aligned_faces")[0].metadata
    assert faces_meta["faces"].value >= 6  # one face from each good photo, the rotated one included

    # A corrupt file added later is skipped too; the faces extracted before are all still there.
    store = ArtifactStore(swapline_home)
    ids_before = face_ids(store, partition)
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    again = materialize(project, instance, partition)
    assert again.success
    reasons = again.asset_materializations_for_node("ben__frames")[0].metadata["skipped_reasons"].value
    assert "zz_broken.png" in {r["photo"].rsplit("/", 1)[-1] for r in reasons}
    assert again.asset_materializations_for_node("ben__aligned_faces")[0].metadata["faces"].value == faces_meta["faces"].value
    assert face_ids(store, partition) == ids_before
