"""The C2PA signer of converted videos: the install's local CA by default, or the user's certificate."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from swapline.ops.c2pa_manifest import ManifestInfo, read_manifest, sign_mp4
from swapline.ops.signing_identity import SigningError, SigningIdentity, ensure_local_identity, load_identity

logger = logging.getLogger(__name__)


class Signer(dg.ConfigurableResource):
    """Signs every converted MP4 with a C2PA manifest (Content Credentials), entirely offline.

    Without a certificate of your own, swapline makes a local CA on first use in
    `$SWAPLINE_HOME/signing/` (`ca.pem`, and `signer.pem`/`signer.key` for the key that signs;
    keys owner-only). A C2PA viewer then reports the manifest as "Valid" (intact, signer unknown);
    it says "Trusted" only once `$SWAPLINE_HOME/signing/ca.pem` is added to its trust anchors.
    With your own certificate (`cert_chain` + `private_key`, e.g. from your organisation's CA),
    viewers that already trust that CA see "Trusted"; `trust_anchors` names that CA's root so
    swapline's own read-back can say so too. Without a time-stamp authority (none offline) the
    signature carries no trusted time: the manifest says `timestamp: none (offline)`.
    """

    cert_chain: str | None = Field(
        default=None, description="PEM certificate chain (signing certificate first), e.g. $SWAPLINE_SIGNING_CERT.")
    private_key: str | None = Field(
        default=None, description="Unencrypted PEM private key of that certificate, e.g. $SWAPLINE_SIGNING_KEY.")
    trust_anchors: str | None = Field(
        default=None, description="PEM root certificate(s) the chain leads to, used to verify after signing.")

    def identity(self, home: Path) -> SigningIdentity:
        """The user's certificate when both paths are set, else the local one under `home`/signing."""
        if self.cert_chain and self.private_key:
            anchors = Path(self.trust_anchors) if self.trust_anchors else None
            return load_identity(Path(self.cert_chain), Path(self.private_key), anchors)
        if self.cert_chain or self.private_key:
            given, missing = ("cert_chain", "private_key") if self.cert_chain else ("private_key", "cert_chain")
            raise SigningError(f"Signer: {given} is set but {missing} is not; set both (your own certificate) "
                               "or neither (swapline's local CA)")
        if self.trust_anchors:
            logger.warning("Signer: trust_anchors is set without cert_chain/private_key; the local CA is used instead")
        return ensure_local_identity(Path(home) / "signing")

    def sign(self, src: Path, dst: Path, home: Path, *, title: str, parent: Path, assertion: dict[str, Any],
             watermark: dict[str, Any] | None = None) -> str:
        """Sign `src` into `dst` (the last write to it); returns the signed file's sha256."""
        return sign_mp4(src, dst, self.identity(home), title=title, parent=parent, assertion=assertion, watermark=watermark)

    def verify(self, path: Path, home: Path) -> ManifestInfo:
        """Read `path`'s manifest back, trusting this signer's anchors (what a viewer with them would see)."""
        return read_manifest(path, self.identity(home).anchors_pem)
