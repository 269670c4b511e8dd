"""REC attributes in a document checked against what the chain says.

A disagreement is recorded on the job (``rec_mismatches``) for the API and operators to see;
it never blocks the metadata, because the chain, not the document, is authoritative.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Certificate, Facility
from indexer.metadata.sip016 import RecClaims, rec_claims


def _diff(out: dict[str, Any], name: str, claimed: Any, chain: Any) -> None:
    if claimed is not None and chain is not None and claimed != chain:
        out[name] = {"document": _plain(claimed), "chain": _plain(chain)}


def _plain(v: Any) -> Any:
    return v.isoformat() if hasattr(v, "isoformat") else v


async def _facility(session: AsyncSession, facility_id: int) -> Facility | None:
    return (
        await session.execute(
            select(Facility).where(Facility.facility_id == facility_id, Facility.block_to.is_(None))
        )
    ).scalar_one_or_none()


async def rec_mismatches(
    session: AsyncSession, subject_kind: str, subject_id: int, document: dict[str, Any]
) -> dict[str, Any]:
    """Fields where the document and the chain disagree; {} when they agree."""
    claims: RecClaims = rec_claims(document)
    out: dict[str, Any] = {}
    facility: Facility | None
    if subject_kind == "certificate":
        cert = (
            await session.execute(
                select(Certificate).where(
                    Certificate.token_id == subject_id, Certificate.block_to.is_(None)
                )
            )
        ).scalar_one_or_none()
        if cert is None:
            return {"subject": {"document": subject_id, "chain": None}}
        _diff(out, "facility_id", claims.facility_id, cert.facility_id)
        _diff(out, "period_start", claims.period_start, cert.period_start)
        _diff(out, "period_end", claims.period_end, cert.period_end)
        _diff(out, "wh", claims.wh, cert.wh)
        facility = await _facility(session, cert.facility_id)
    elif subject_kind == "facility":
        _diff(out, "facility_id", claims.facility_id, subject_id)
        facility = await _facility(session, subject_id)
        if facility is None:
            return {"subject": {"document": subject_id, "chain": None}}
    else:
        return {}
    if facility is not None:
        _diff(out, "energy_source", claims.energy_source, facility.energy_source)
        _diff(out, "country", claims.country, facility.country.upper())
    return out
