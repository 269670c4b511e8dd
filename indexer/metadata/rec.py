"""REC attributes in a document checked against what the chain says.

A disagreement is recorded on the job (``rec_mismatches``) for the API and operators to see;
it never blocks the metadata, because the chain, not the document, is authoritative.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Certificate, Facility
from indexer.metadata.sip016 import RecClaims, rec_claims


def _diff(out: dict[str, Any], name: str, claimed: Any, chain: Any) -> None:
    if claimed is not None and chain is not None and claimed != chain:
        out[name] = {"document": _plain(claimed), "chain": _plain(chain)}


def _plain(v: Any) -> Any:
    return v.isoformat() if hasattr(v, "isoformat") else v


Subject = tuple[str, int, RecClaims]


def _compare(
    kind: str, subject_id: int, claims: RecClaims, cert: Any | None, facility: Any | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if kind == "certificate":
        if cert is None:
            return {"subject": {"document": subject_id, "chain": None}}
        _diff(out, "facility_id", claims.facility_id, cert.facility_id)
        _diff(out, "period_start", claims.period_start, cert.period_start)
        _diff(out, "period_end", claims.period_end, cert.period_end)
        _diff(out, "wh", claims.wh, cert.wh)
    elif kind == "facility":
        _diff(out, "facility_id", claims.facility_id, subject_id)
        if facility is None:
            return {"subject": {"document": subject_id, "chain": None}}
    else:
        return {}
    if facility is not None:
        _diff(out, "energy_source", claims.energy_source, facility.energy_source)
        _diff(out, "country", claims.country, facility.country.upper())
    return out


async def rec_mismatches_many(
    session: AsyncSession, subjects: list[Subject]
) -> list[dict[str, Any]]:
    """The mismatches of each (kind, subject id, claims), in order: at most two queries for
    any number of subjects (certificates with their facility, and facilities)."""
    cert_ids = sorted({sid for kind, sid, _ in subjects if kind == "certificate"})
    facility_ids = sorted({sid for kind, sid, _ in subjects if kind == "facility"})
    c, f = Certificate.__table__, Facility.__table__
    certs: dict[int, Any] = {}
    facilities: dict[int, Any] = {}
    if cert_ids:
        rows = await session.execute(
            select(
                c.c.token_id,
                c.c.facility_id,
                c.c.period_start,
                c.c.period_end,
                c.c.wh,
                f.c.facility_id.label("f_id"),
                f.c.energy_source,
                f.c.country,
            )
            .select_from(
                c.outerjoin(f, and_(f.c.facility_id == c.c.facility_id, f.c.block_to.is_(None)))
            )
            .where(c.c.token_id.in_(cert_ids), c.c.block_to.is_(None))
        )
        for row in rows:
            certs[row.token_id] = row
    if facility_ids:
        rows = await session.execute(
            select(f.c.facility_id, f.c.energy_source, f.c.country).where(
                f.c.facility_id.in_(facility_ids), f.c.block_to.is_(None)
            )
        )
        for row in rows:
            facilities[row.facility_id] = row
    out = []
    for kind, sid, claims in subjects:
        if kind == "certificate":
            cert = certs.get(sid)
            facility = cert if cert is not None and cert.f_id is not None else None
        else:
            cert, facility = None, facilities.get(sid)
        out.append(_compare(kind, sid, claims, cert, facility))
    return out


async def rec_mismatches(
    session: AsyncSession, subject_kind: str, subject_id: int, document: dict[str, Any]
) -> dict[str, Any]:
    """Fields where the document and the chain disagree; {} when they agree."""
    (out,) = await rec_mismatches_many(session, [(subject_kind, subject_id, rec_claims(document))])
    return out
