"""One key per action across processes: a keyed hash of the action as written.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

Rows journaled before keep their (alarm, action) order: each gets the hash of
the action its row holds (the masked one once settled, which only settled
rows have, and settled rows never wait for anything).

The column defaults to an empty key, so that a host still running the
previous release during a rolling upgrade can journal (its rows then order
among themselves by alarm only) instead of having every row refused.
"""

import hashlib
import hmac
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _key(secret: bytes, action: str) -> str:
    return hmac.new(secret, action.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def upgrade() -> None:
    keys = op.create_table(
        "journal_keys",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("secret", sa.String(128), nullable=False),
    )
    secret = secrets.token_bytes(32)
    op.bulk_insert(keys, [{"name": "action", "secret": secret.hex()}])
    op.add_column("deliveries", sa.Column("action_key", sa.String(64)))
    conn = op.get_bind()
    table = sa.table(
        "deliveries",
        sa.column("request_id", sa.String),
        sa.column("action", sa.Text),
        sa.column("action_key", sa.String),
    )
    last = ""
    while True:  # in pages, so that a large journal is not read into memory at once
        rows = conn.execute(
            sa.select(table.c.request_id, table.c.action)
            .where(table.c.request_id > last)
            .order_by(table.c.request_id)
            .limit(5000)
        ).all()
        if not rows:
            break
        conn.execute(
            table.update()
            .where(table.c.request_id == sa.bindparam("rid"))
            .values(action_key=sa.bindparam("key")),
            [{"rid": rid, "key": _key(secret, action)} for rid, action in rows],
        )
        last = rows[-1][0]
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column(
            "action_key",
            existing_type=sa.String(64),
            nullable=False,
            server_default="",
        )
    op.create_index("ix_deliveries_alarm_key", "deliveries", ["alarm_id", "action_key"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_alarm_key", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("action_key")
    op.drop_table("journal_keys")
