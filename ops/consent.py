"""Consent: who agreed to their face being used, when, how it is evidenced, and whether it still
holds. The project file embeds `Consent` (one definition); training and conversion call
`require_live_consent` before any work, and the automation asks `lapsed` before requesting them.
Light on purpose (pydantic only): the code location imports it."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ConsentError(PermissionError):
    """An identity without live consent (none declared, withdrawn, expired) is neither trained nor converted."""


class Consent(BaseModel):
    """Who agreed to their face being used, when, and how that is evidenced; `revoked:` withdraws
    it from that day on, `expires:` ends it after that day."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    given_by: str = Field(min_length=2, description="The person who consented (or their guardian).")
    date: dt.date = Field(description="When consent was given (YYYY-MM-DD).")
    evidence: str = Field(min_length=3, description="How it is evidenced: a signed form, a recording, a reference.")
    scope: str = Field(default="face swap for this project", description="What the consent covers.")
    revoked: dt.date | None = Field(default=None, description="Consent withdrawn from this day on (YYYY-MM-DD): the "
                                    "identity is no longer trained or converted, and its outputs are listed by `swapline report`.")
    expires: dt.date | None = Field(default=None, description="Consent ends after this day (YYYY-MM-DD).")

    @field_validator("date")
    @classmethod
    def _not_in_future(cls, value: dt.date) -> dt.date:
        if value > dt.date.today():
            raise ValueError("consent date is in the future")
        return value

    @model_validator(mode="after")
    def _after_given(self) -> "Consent":
        for name in ("revoked", "expires"):
            when = getattr(self, name)
            if when is not None and when < self.date:
                raise ValueError(f"{name} ({when}) is before the consent was given ({self.date})")
        return self

    def lapsed(self, on: dt.date | None = None) -> str | None:
        """Why this consent no longer holds on `on` (default today), or None while it is live."""
        on = on or dt.date.today()
        if self.revoked is not None and on >= self.revoked:
            return f"revoked on {self.revoked}"
        if self.expires is not None and on > self.expires:
            return f"expired on {self.expires}"
        return None

    def reference(self) -> str:
        """The record as it is cited in refusals, the audit log and the C2PA assertion."""
        return f"consent of {self.given_by}, {self.date}, evidence: {self.evidence}"


def require_live_consent(consents: dict[str, Consent | None], action: str = "convert") -> None:
    """Refuse before doing any work when any identity involved has no live consent, naming the record."""
    missing = [name for name, consent in consents.items() if consent is None]
    if missing:
        raise ConsentError(f"Refusing to {action}: no consent declared for {', '.join(missing)}. Add consent "
                           "(given_by, date, evidence) for every identity in the project file.")
    lapsed = {name: (c, c.lapsed()) for name, c in consents.items() if c is not None and c.lapsed()}
    if lapsed:
        raise ConsentError(f"Refusing to {action}: " + "; ".join(
            f"{name}'s {c.reference()} was {why}" for name, (c, why) in lapsed.items())
            + ". Nothing was trained or converted for this identity; its earlier outputs are listed by `swapline report`.")


def lapsed_identities(consents: dict[str, Consent], on: dt.date | None = None) -> dict[str, str]:
    """{identity: why} for every consent that no longer holds on `on`."""
    return {name: why for name, c in consents.items() if (why := c.lapsed(on))}
