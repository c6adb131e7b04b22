"""Who signs the C2PA manifests: a local CA made on first use, or the user's own certificate.

The local identity is a self-issued CA (`ca.pem`, `ca.key`) and an ES256 leaf it certifies
(`signer.pem` = leaf + CA, `signer.key`). It proves only "made by this swapline install": a
viewer sees "Trusted" after adding `ca.pem` to their trust anchors, "Valid" (signature intact,
signer unknown) otherwise. The leaf carries exactly the extensions c2pa accepts at signing:
critical KeyUsage digitalSignature, EKU emailProtection, AKI and SKI; a self-signed leaf, one
without EKU (or serverAuth only) or without AKI is refused.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swapline.ops.storage import atomic_write_bytes

logger = logging.getLogger(__name__)

CA_DAYS = 3650
LEAF_DAYS = 730
RENEW_DAYS = 30  # a leaf (or CA) this close to expiry is replaced before it signs anything
EMAIL_PROTECTION = "1.3.6.1.5.5.7.3.4"


class SigningError(RuntimeError):
    """A signing key or certificate that cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class SigningIdentity:
    chain_pem: bytes  # leaf first, then its issuers
    key_pem: bytes  # PKCS8, unencrypted (c2pa takes nothing else)
    anchors_pem: bytes | None  # the root(s) a viewer must trust to see "Trusted"
    local: bool  # True: the self-issued CA under $SWAPLINE_HOME/signing
    source: str  # where it came from, for logs and errors
    alg: str = "es256"  # c2pa signing algorithm matching the key


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise SigningError(f"{what} not found: {path}") from None
    except OSError as e:
        raise SigningError(f"{what} unreadable: {path} ({e.strerror or e})") from None


def _parse_certs(data: bytes, path: Path | str, what: str) -> list[Any]:
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise SigningError(f"{what} {path} is not a PEM certificate chain (corrupted?): {e}") from None
    if not certs:
        raise SigningError(f"{what} {path} holds no certificate")
    return certs


def _parse_key(data: bytes, path: Path | str) -> Any:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningError(f"private key {path} is encrypted; give an unencrypted PKCS8 key (file mode 0600)") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise SigningError(f"private key {path} is not a readable PEM private key (corrupted?): {e}") from None


def _alg_for(key: Any, path: Path | str) -> str:
    """The c2pa algorithm name for a key; only those c2pa signs with."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name in by_curve:
            return by_curve[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    raise SigningError(f"private key {path}: unsupported key type for C2PA (use EC P-256/384/521, Ed25519 or RSA)")


def _pkcs8(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _same_key(cert: Any, key: Any) -> bool:
    from cryptography.hazmat.primitives import serialization

    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def _check_dates(cert: Any, path: Path | str, now: dt.datetime) -> None:
    if now > cert.not_valid_after_utc:
        raise SigningError(f"certificate {path} expired on {cert.not_valid_after_utc:%Y-%m-%d}; renew it")
    if now < cert.not_valid_before_utc:
        raise SigningError(f"certificate {path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")


def load_identity(chain_path: Path, key_path: Path, anchors_path: Path | None = None, *,
                  now: dt.datetime | None = None) -> SigningIdentity:
    """A user's own certificate chain and key, checked here so a bad file fails before any signing."""
    certs = _parse_certs(_read(chain_path, "certificate chain"), chain_path, "certificate chain")
    key = _parse_key(_read(key_path, "private key"), key_path)
    if not _same_key(certs[0], key):
        raise SigningError(f"private key {key_path} does not match the certificate {chain_path} (first in the chain)")
    _check_dates(certs[0], chain_path, now or _now())
    anchors = None
    if anchors_path is not None:
        anchors = b"".join(_pem(c) for c in _parse_certs(_read(anchors_path, "trust anchors"), anchors_path, "trust anchors"))
    return SigningIdentity(chain_pem=b"".join(_pem(c) for c in certs), key_pem=_pkcs8(key), anchors_pem=anchors,
                           local=False, source=str(chain_path), alg=_alg_for(key, key_path))


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swapline (local, self-issued)")])


def _key_usage(*, sign: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False, data_encipherment=False,
                         key_agreement=False, key_cert_sign=not sign, crl_sign=not sign, encipher_only=False, decipher_only=False)


def _make_ca(now: dt.datetime) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("swapline local signing CA")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(sign=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _make_leaf(ca: Any, ca_key: Any, now: dt.datetime) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ObjectIdentifier

    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + dt.timedelta(days=LEAF_DAYS), ca.not_valid_after_utc)  # never outlive the CA
    cert = (x509.CertificateBuilder().subject_name(_name("swapline signer")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(sign=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ObjectIdentifier(EMAIL_PROTECTION)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def _issued_by(cert: Any, ca: Any) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # InvalidSignature, ValueError or TypeError: all mean "not this CA's"
        return False
    return True


def _fresh(cert: Any, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - now > dt.timedelta(days=RENEW_DAYS)


def _local_ca(folder: Path, now: dt.datetime) -> tuple[Any, Any, bool]:
    """(cert, key, made_now). A damaged CA is an error, not replaced: viewers may already trust it."""
    cert_path, key_path = folder / "ca.pem", folder / "ca.key"
    if not cert_path.exists() and not key_path.exists():
        cert, key = _make_ca(now)
        atomic_write_bytes(key_path, _pkcs8(key), 0o600)
        atomic_write_bytes(cert_path, _pem(cert), 0o644)
        logger.info("created the local C2PA signing CA %s (viewers trust it to see 'Trusted')", cert_path)
        return cert, key, True
    cert = _parse_certs(_read(cert_path, "local CA certificate"), cert_path, "local CA certificate")[0]
    key = _parse_key(_read(key_path, "local CA key"), key_path)
    if not _same_key(cert, key):
        raise SigningError(f"local CA key {key_path} does not match {cert_path}; restore both or delete the folder {folder}")
    if not _fresh(cert, now):
        # Ten years on: a new CA, so the old ca.pem stops vouching for new videos.
        logger.warning("local signing CA %s expires %s; making a new one: share the new ca.pem", cert_path,
                       cert.not_valid_after_utc.date())
        cert_path.unlink()
        key_path.unlink()
        return _local_ca(folder, now)
    return cert, key, False


def _local_leaf(folder: Path, ca: Any, ca_key: Any, now: dt.datetime, renew: bool) -> tuple[Any, Any]:
    """The signer leaf: issued when neither of its files exists (first use) or when it nears
    expiry (same CA, so nothing changes for viewers). A key or certificate that is missing on its
    own, damaged, or not this CA's is an error, never silently replaced: it may have been
    tampered with, and a conversion must fail closed rather than sign with something new."""
    cert_path, key_path = folder / "signer.pem", folder / "signer.key"
    if not renew and (cert_path.exists() or key_path.exists()):
        cert = _parse_certs(_read(cert_path, "local signer certificate"), cert_path, "local signer certificate")[0]
        key = _parse_key(_read(key_path, "local signer key"), key_path)
        if not (_same_key(cert, key) and _issued_by(cert, ca)):
            raise SigningError(f"local signer {cert_path} / {key_path} do not belong together or to the local CA; "
                               f"restore them, or delete both to issue a new signer from the same CA")
        if _fresh(cert, now):
            return cert, key
    cert, key = _make_leaf(ca, ca_key, now)
    atomic_write_bytes(key_path, _pkcs8(key), 0o600)
    atomic_write_bytes(cert_path, _pem(cert) + _pem(ca), 0o644)
    logger.info("issued a local C2PA signer certificate %s valid until %s", cert_path, cert.not_valid_after_utc.date())
    return cert, key


def ensure_local_identity(folder: Path, *, now: dt.datetime | None = None) -> SigningIdentity:
    """The install's own CA and signer in `folder`, made on first use; safe to call concurrently."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # private keys live here: owner only
    now = now or _now()
    with open(folder / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two first uses must not make two different CAs
        ca, ca_key, made = _local_ca(folder, now)
        leaf, key = _local_leaf(folder, ca, ca_key, now, renew=made)
    return SigningIdentity(chain_pem=_pem(leaf) + _pem(ca), key_pem=_pkcs8(key), anchors_pem=_pem(ca),
                           local=True, source=str(folder))
