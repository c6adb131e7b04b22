"""C2PA signing of converted MP4s, offline, on real files: sign, read back, damage, remux, bad keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from swapline.ops.c2pa_manifest import NO_TIMESTAMP, read_manifest, sign_mp4, top_level_boxes
from swapline.ops.provenance import DIGITAL_SOURCE_TYPE
from swapline.ops.signing_identity import LEAF_DAYS, SigningError, ensure_local_identity, load_identity
from swapline.resources.signer import Signer

MEDIA = Path(__file__).resolve().parents[2] / "demo" / "media"
FRAMES = 16
WATERMARK = {"alg": "org.swapline.watermark.dwt-dct-svd-u.1", "payload": "00C0FFEE0123"}
FACTS = {"conversion": "c-test", "model": "m-test", "synthetic": True}


def _make_mp4(path: Path, *, fragmented: bool = False) -> Path:
    options = {"movflags": "frag_keyframe+empty_moov"} if fragmented else {}
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for _ in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _sign(src: Path, dst: Path, identity, parent: Path | None = None) -> str:
    return sign_mp4(src, dst, identity, title=dst.name, parent=parent or MEDIA / "single_face.mp4",
                    assertion=FACTS, watermark=WATERMARK)


@pytest.fixture(scope="module")
def signed(tmp_path_factory, media_dir):
    root = tmp_path_factory.mktemp("c2pa")
    identity = ensure_local_identity(root / "signing")
    src = _make_mp4(root / "converted.mp4")
    digest = _sign(src, root / "signed.mp4", identity, parent=media_dir / "single_face.mp4")
    return {"root": root, "identity": identity, "src": src, "dst": root / "signed.mp4", "sha256": digest}


def test_signed_video_reads_back_trusted_with_our_facts(signed):
    info = read_manifest(signed["dst"], signed["identity"].anchors_pem)
    assert info.state == "Trusted" and info.codes == []
    assert info.actions == ["c2pa.opened", "c2pa.edited", "c2pa.watermarked"]
    assert info.digital_source_type == DIGITAL_SOURCE_TYPE
    assert info.parent == "single_face.mp4"
    assert info.soft_binding and info.swapline and info.signer
    assert info.soft_binding["alg"] == WATERMARK["alg"]
    assert info.soft_binding["blocks"][0]["value"] == WATERMARK["payload"].lower()
    assert FACTS.items() <= info.swapline.items() and info.swapline["timestamp"] == NO_TIMESTAMP
    assert info.timestamp == NO_TIMESTAMP and "swapline signer" in info.signer
    assert hashlib.sha256(signed["dst"].read_bytes()).hexdigest() == signed["sha256"]
    assert [kind for kind, _, _ in top_level_boxes(signed["dst"])][:2] == ["ftyp", "uuid"]
    assert _decoded_frames(signed["dst"]) == FRAMES


def test_without_our_anchor_the_signature_is_valid_but_untrusted(signed):
    info = read_manifest(signed["dst"], None)
    assert info.state == "Valid" and "signingCredential.untrusted" in info.codes


def test_one_flipped_byte_in_mdat_is_invalid(signed, tmp_path):
    _, offset, size = next(box for box in top_level_boxes(signed["dst"]) if box[0] == "mdat")
    data = bytearray(signed["dst"].read_bytes())
    data[offset + size // 2] ^= 0xFF
    (tmp_path / "flipped.mp4").write_bytes(bytes(data))
    info = read_manifest(tmp_path / "flipped.mp4", signed["identity"].anchors_pem)
    assert info.state == "Invalid" and any("bmffHash" in code for code in info.codes)


def test_a_stream_copy_remux_drops_the_manifest(signed, tmp_path):
    remuxed = tmp_path / "remuxed.mp4"
    with av.open(str(signed["dst"])) as source, av.open(str(remuxed), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    assert _decoded_frames(remuxed) == FRAMES
    assert read_manifest(remuxed, signed["identity"].anchors_pem).state == "none"


def test_unsigned_and_damaged_files_never_raise(signed, tmp_path):
    assert read_manifest(signed["src"]).state == "none"
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(signed["dst"].read_bytes()[:600])  # inside the manifest box
    info = read_manifest(cut, signed["identity"].anchors_pem)
    assert info.state == "Invalid" and info.error
    (tmp_path / "text.mp4").write_text("not a video at all")
    assert read_manifest(tmp_path / "text.mp4").state == "Invalid"


def test_key_files_are_owner_only(signed):
    folder = signed["root"] / "signing"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("ca.key", "signer.key"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600


def test_local_identity_is_made_once_and_renewed_near_expiry(tmp_path):
    with ThreadPoolExecutor(4) as pool:  # concurrent first use: one CA, one signer
        identities = list(pool.map(lambda _: ensure_local_identity(tmp_path / "signing"), range(4)))
    assert len({i.anchors_pem for i in identities}) == 1 and len({i.chain_pem for i in identities}) == 1
    again = ensure_local_identity(tmp_path / "signing")
    assert (again.anchors_pem, again.chain_pem, again.local) == (identities[0].anchors_pem, identities[0].chain_pem, True)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=LEAF_DAYS - 5)
    renewed = ensure_local_identity(tmp_path / "signing", now=later)
    assert renewed.anchors_pem == again.anchors_pem and renewed.chain_pem != again.chain_pem


def test_bad_keys_raise_clearly_and_write_nothing(signed, tmp_path):
    folder = signed["root"] / "signing"
    bad = tmp_path / "bad.key"
    bad.write_bytes((folder / "signer.key").read_bytes()[:60] + b"garbage\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SigningError, match="corrupted"):
        load_identity(folder / "signer.pem", bad)
    with pytest.raises(SigningError, match="not found"):
        load_identity(folder / "signer.pem", tmp_path / "missing.key")
    dst = tmp_path / "out.mp4"
    broken = replace(signed["identity"], key_pem=bad.read_bytes())
    with pytest.raises(SigningError, match="signing of"):
        _sign(signed["src"], dst, broken)
    assert not dst.exists() and list(tmp_path.iterdir()) == [bad]  # no temp file left either
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "ca.key").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SigningError, match="ca.key"):
        ensure_local_identity(copy)


def test_a_damaged_or_lone_local_signer_fails_closed(signed, tmp_path):
    copy = tmp_path / "signing"
    shutil.copytree(signed["root"] / "signing", copy)
    (copy / "signer.key").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SigningError, match="signer.key"):
        ensure_local_identity(copy)  # never silently replaced by a new key
    (copy / "signer.key").unlink()
    with pytest.raises(SigningError, match="local signer key not found"):
        ensure_local_identity(copy)
    (copy / "signer.pem").unlink()  # both gone: a new signer from the same CA
    assert ensure_local_identity(copy).anchors_pem == signed["identity"].anchors_pem


def test_fragmented_mp4_is_refused(signed, tmp_path):
    fragmented = _make_mp4(tmp_path / "fragmented.mp4", fragmented=True)
    with pytest.raises(SigningError, match="fragmented"):
        _sign(fragmented, tmp_path / "out.mp4", signed["identity"])
    assert not (tmp_path / "out.mp4").exists()


def _user_pki(folder: Path, *, expired: bool = False) -> dict[str, Path]:
    """An organisation's CA and an ES256 signing certificate, as a user would bring them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Newsroom Root")])
    usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
                 encipher_only=False, decipher_only=False)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **usage), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    end = now - dt.timedelta(days=1) if expired else now + dt.timedelta(days=90)
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Video Desk")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(days=2)).not_valid_after(end)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = {"chain": folder / "chain.pem", "key": folder / "desk.key", "root": folder / "root.pem"}
    paths["chain"].write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    # A traditional "EC PRIVATE KEY" file, as openssl writes it: load_identity hands c2pa PKCS8.
    paths["key"].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                               serialization.NoEncryption()))
    paths["root"].write_bytes(ca.public_bytes(pem))
    return paths


def test_a_users_own_certificate_signs_and_verifies_against_its_anchor(signed, tmp_path):
    pki = _user_pki(tmp_path)
    identity = load_identity(pki["chain"], pki["key"], pki["root"])
    assert not identity.local and identity.alg == "es256"
    _sign(signed["src"], tmp_path / "desk.mp4", identity)
    info = read_manifest(tmp_path / "desk.mp4", pki["root"].read_bytes())
    assert info.state == "Trusted" and "Example Video Desk" in (info.signer or "")
    assert read_manifest(tmp_path / "desk.mp4", signed["identity"].anchors_pem).state == "Valid"  # not our CA
    with pytest.raises(SigningError, match="does not match"):
        load_identity(pki["chain"], signed["root"] / "signing" / "signer.key")
    (tmp_path / "old").mkdir()
    old = _user_pki(tmp_path / "old", expired=True)
    with pytest.raises(SigningError, match="expired"):
        load_identity(old["chain"], old["key"])


def test_signer_resource_picks_the_identity(signed, tmp_path):
    pki = _user_pki(tmp_path)
    local = Signer().identity(tmp_path / "home")
    assert local.local and (tmp_path / "home" / "signing" / "ca.pem").read_bytes() == local.anchors_pem
    own = Signer(cert_chain=str(pki["chain"]), private_key=str(pki["key"]), trust_anchors=str(pki["root"]))
    assert not own.identity(tmp_path / "home").local
    with pytest.raises(SigningError, match="private_key is not"):
        Signer(cert_chain=str(pki["chain"])).identity(tmp_path / "home")
    own.sign(signed["src"], tmp_path / "out.mp4", tmp_path / "home", title="out.mp4", parent=MEDIA / "single_face.mp4",
             assertion=FACTS)
    assert own.verify(tmp_path / "out.mp4", tmp_path / "home").state == "Trusted"
