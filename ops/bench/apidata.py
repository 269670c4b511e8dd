"""A generated, internally consistent data set for the API benchmarks, written with set-based
SQL (generate_series) so a million certificates take minutes, not hours.

Shape, for N certificates: 1,000 facilities, 20,000 owners, 20,000 blocks; every token is minted
(one version); a third are transferred later (a second version); a tenth of those are retired
for one of 200 beneficiaries; a sixth are sold; 1% have an open fixed-price listing.
"""

from __future__ import annotations

import time

import psycopg

FACILITIES = 1_000
OWNERS = 20_000
BLOCKS = 20_000
BENEFICIARIES = 200
T0 = 1_735_689_600  # 2025-01-01T00:00:00Z

STATEMENTS = [
    """INSERT INTO blocks (index_block_hash, block_hash, block_height, parent_index_block_hash,
           burn_block_height, burn_block_hash, burn_block_time, block_time, canonical)
       SELECT '0x' || md5('i' || h), '0x' || md5('b' || h), h, '0x' || md5('i' || (h - 1)),
              100 + h, '0x' || md5('btc' || h), {t0} + h * 600, {t0} + h * 600, true
       FROM generate_series(1, {blocks}) h""",
    """INSERT INTO facilities (facility_id, owner, name, country, subdivision, market_boundary,
           grid_zone, energy_source, technology, capacity_w, commissioning_date, public_support,
           registry_ids, status, registered_height, block_from)
       SELECT f, 'SPOWNER' || (f % 97),
              (ARRAY['Sonnen', 'Prairie', 'Fjord', 'Mistral', 'Atacama'])[1 + f % 5]
                || ' ' || (ARRAY['Solar', 'Wind', 'Hydro'])[1 + f % 3] || ' Park ' || f,
              (ARRAY['DE', 'US', 'NO', 'FR', 'CL'])[1 + f % 5], NULL,
              (ARRAY['EU-AIB', 'US-ERCOT', 'EU-AIB', 'EU-AIB', 'CL-SEN'])[1 + f % 5], NULL,
              (ARRAY['ES100', 'ES200', 'ES300'])[1 + f % 3], 'TC110', 5000000,
              make_date(2000 + f % 25, 1, 1), false, '{{}}'::jsonb, 'active', 1, 1
       FROM generate_series(1, {facilities}) f""",
    """INSERT INTO generation_reports (report_id, facility_id, period_start, period_end, wh,
           submitter, status, submitted_height, block_from)
       SELECT r, 1 + r % {facilities},
              make_timestamptz(2024 + r % 2, 1 + r % 12, 1, 0, 0, 0, 'UTC'),
              make_timestamptz(2024 + r % 2, 1 + r % 12, 1, 0, 0, 0, 'UTC') + interval '1 month',
              10 * 1000000, 'SPOWNER1', 'minted', 1, 1
       FROM generate_series(0, {n} / 10) r""",
    # Version 1 of every token: minted to its first owner; closed when the token moves.
    """INSERT INTO certificates (token_id, facility_id, report_id, owner, status, period_start,
           period_end, vintage, wh, serial_start, serial_end, metadata_uri, issued_height,
           issued_txid, block_from, block_to)
       SELECT i, 1 + (i / 10) % {facilities}, i / 10, 'SP' || (i % {owners}), 'active',
              make_timestamptz((2024 + (i / 10) % 2)::int, 1, 1, 0, 0, 0, 'UTC'),
              make_timestamptz((2025 + (i / 10) % 2)::int, 1, 1, 0, 0, 0, 'UTC'),
              2024 + (i / 10) % 2, 1000000, (i % 10) * 1000000, (i % 10 + 1) * 1000000,
              'ipfs://bafy' || i, 1 + i % ({blocks} / 2), '0x' || md5('mint' || i),
              1 + i % ({blocks} / 2),
              CASE WHEN i % 3 = 0 THEN 1 + i % ({blocks} / 2) + 500 + i % 5000 END
       FROM generate_series(1, {n}) i""",
    """INSERT INTO certificates (token_id, facility_id, report_id, owner, status, period_start,
           period_end, vintage, wh, serial_start, serial_end, metadata_uri, issued_height,
           issued_txid, block_from, block_to)
       SELECT token_id, facility_id, report_id, 'SP' || ((token_id * 7) % {owners}),
              CASE WHEN token_id % 30 = 0 THEN 'retired' ELSE 'active' END, period_start,
              period_end, vintage, wh, serial_start, serial_end, metadata_uri, issued_height,
              issued_txid, block_to, NULL
       FROM certificates WHERE block_to IS NOT NULL""",
    """INSERT INTO transfers (token_id, sender, recipient, kind, price, currency, block_height,
           index_block_hash, txid, event_index, block_time)
       SELECT token_id, NULL, owner, 'mint', NULL, NULL, block_from, '0x' || md5('i' || block_from),
              issued_txid, 0, to_timestamp({t0} + block_from * 600)
       FROM certificates c WHERE c.block_from = c.issued_height""",
    """INSERT INTO transfers (token_id, sender, recipient, kind, price, currency, block_height,
           index_block_hash, txid, event_index, block_time)
       SELECT c.token_id, 'SP' || (c.token_id % {owners}), c.owner,
              CASE WHEN c.token_id % 6 = 0 THEN 'sale' ELSE 'transfer' END,
              CASE WHEN c.token_id % 6 = 0 THEN 4000000 + c.token_id % 1000 END,
              CASE WHEN c.token_id % 6 = 0 THEN 'STX' END,
              c.block_from, '0x' || md5('i' || c.block_from), '0x' || md5('move' || c.token_id), 1,
              to_timestamp({t0} + c.block_from * 600)
       FROM certificates c WHERE c.block_from > c.issued_height""",
    """INSERT INTO transfers (token_id, sender, recipient, kind, block_height, index_block_hash,
           txid, event_index, block_time)
       SELECT token_id, owner, NULL, 'retire', block_from, '0x' || md5('i' || block_from),
              '0x' || md5('retire' || token_id), 2, to_timestamp({t0} + block_from * 600)
       FROM certificates WHERE status = 'retired'""",
    """INSERT INTO retirements (token_id, facility_id, wh, serial_start, serial_end, vintage,
           retiring_account, beneficiary_name, consumption_country, consumption_boundary,
           claim_start, claim_end, reporting_year, purpose, block_height, index_block_hash,
           txid, event_index, block_time)
       SELECT token_id, facility_id, wh, serial_start, serial_end, vintage, owner,
              'Beneficiary ' || (token_id % {beneficiaries}), 'DE', 'EU-AIB',
              make_timestamptz((2024 + token_id % 2)::int, 1, 1, 0, 0, 0, 'UTC'),
              make_timestamptz((2025 + token_id % 2)::int, 1, 1, 0, 0, 0, 'UTC'),
              2024 + token_id % 2,
              'RE100', block_from, '0x' || md5('i' || block_from),
              '0x' || md5('retire' || token_id), 2, to_timestamp({t0} + block_from * 600)
       FROM certificates WHERE status = 'retired'""",
    """INSERT INTO sales (listing_id, token_id, kind, seller, buyer, currency, price, fee, wh,
           block_height, index_block_hash, txid, event_index, block_time)
       SELECT t.token_id + {n}, t.token_id, 'fixed', t.sender, t.recipient, 'STX', t.price,
              t.price / 40, 1000000, t.block_height, t.index_block_hash, t.txid, 1, t.block_time
       FROM transfers t WHERE t.kind = 'sale'""",
    """INSERT INTO listings (listing_id, kind, token_id, seller, currency, price, bid_count,
           start_height, end_height, status, block_from)
       SELECT c.token_id, 'fixed', c.token_id, c.owner, 'STX', 3000000 + c.token_id % 5000, 0,
              c.block_from, c.block_from + 10000, 'active', c.block_from
       FROM certificates c WHERE c.block_to IS NULL AND c.status = 'active'
         AND c.token_id % 100 = 1""",
]


def populate(libpq_url: str, certificates: int, log: bool = True) -> float:
    """Fill an empty, migrated database; returns the seconds it took."""
    started = time.perf_counter()
    values = {
        "n": certificates,
        "facilities": FACILITIES,
        "owners": OWNERS,
        "blocks": BLOCKS,
        "beneficiaries": BENEFICIARIES,
        "t0": T0,
    }
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        for i, stmt in enumerate(STATEMENTS, 1):
            t = time.perf_counter()
            conn.execute(stmt.format(**values).encode())
            if log:
                print(
                    f"  data step {i}/{len(STATEMENTS)}: {time.perf_counter() - t:.1f}s", flush=True
                )
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started
