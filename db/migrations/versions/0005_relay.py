"""relay: outbox of relayed transactions and their broadcast attempts

Revision ID: 0005
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("received", "broadcast", "mempool", "mined", "failed", "dropped", "rejected")


def upgrade() -> None:
    op.create_table(
        "relay_txs",
        sa.Column("txid", sa.Text(), nullable=False),
        sa.Column("raw_tx", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'received'"), nullable=False),
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("sponsor", sa.Text(), nullable=True),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("contract_id", sa.Text(), nullable=False),
        sa.Column("function_name", sa.Text(), nullable=False),
        sa.Column("client", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("reason_data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("block_height", sa.Integer(), nullable=True),
        sa.Column("index_block_hash", sa.Text(), nullable=True),
        sa.Column("tx_status", sa.Text(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("broadcast_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("mined_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")",
            name=op.f("ck_relay_txs_relay_status"),
        ),
        sa.PrimaryKeyConstraint("txid", name=op.f("pk_relay_txs")),
    )
    op.create_index(
        "ix_relay_txs_due",
        "relay_txs",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'received'"),
    )
    op.create_index("ix_relay_txs_sender_nonce", "relay_txs", ["sender", "nonce"], unique=False)
    op.create_table(
        "relay_attempts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("txid", sa.Text(), nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["txid"],
            ["relay_txs.txid"],
            name=op.f("fk_relay_attempts_txid_relay_txs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_attempts")),
    )
    op.create_index("ix_relay_attempts_txid", "relay_attempts", ["txid"], unique=False)

    # Every status change NOTIFYs listeners, whichever role made it (relay or indexer), so no
    # writer can forget; the payload names the row, never its data (see db/channels.py).
    op.execute(
        """
        CREATE FUNCTION relay_txs_touch() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at := now();
            RETURN NEW;
        END $$;
        CREATE FUNCTION relay_txs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify(
                'recchain_relay',
                json_build_object('txid', NEW.txid, 'status', NEW.status)::text
            );
            RETURN NULL;
        END $$;
        CREATE TRIGGER relay_txs_touch BEFORE UPDATE ON relay_txs
            FOR EACH ROW EXECUTE FUNCTION relay_txs_touch();
        CREATE TRIGGER relay_txs_notify_insert AFTER INSERT ON relay_txs
            FOR EACH ROW EXECUTE FUNCTION relay_txs_notify();
        CREATE TRIGGER relay_txs_notify_update AFTER UPDATE OF status ON relay_txs
            FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
            EXECUTE FUNCTION relay_txs_notify();
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS relay_attempts")
    op.execute("DROP TABLE IF EXISTS relay_txs")
    op.execute("DROP FUNCTION IF EXISTS relay_txs_notify()")
    op.execute("DROP FUNCTION IF EXISTS relay_txs_touch()")
