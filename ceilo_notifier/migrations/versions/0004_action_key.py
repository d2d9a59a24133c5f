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


def _supersede_stale_open_rows(conn) -> None:
    """An open row with a newer transition of its alarm to the same (masked) action
    was stale under the previous release's rule, which resuming applied; under
    the new key a settled newer row (masked) would no longer match the open one
    (raw), so the rule is applied once here."""
    d = sa.table(
        "deliveries",
        sa.column("request_id", sa.String),
        sa.column("alarm_id", sa.String),
        sa.column("action", sa.Text),
        sa.column("action_masked", sa.Text),
        sa.column("state", sa.String),
        sa.column("error", sa.Text),
        sa.column("created_at", sa.DateTime),
    )
    newer = d.alias("newer")
    stale = (
        sa.select(d.c.request_id)
        .where(d.c.state.in_(("pending", "retrying")))
        .where(
            sa.exists()
            .where(newer.c.alarm_id == d.c.alarm_id)
            .where(newer.c.action_masked == d.c.action_masked)
            .where(newer.c.created_at > d.c.created_at)
            .where(newer.c.state != "dropped")
        )
    )
    ids = [rid for (rid,) in conn.execute(stale)]
    for start in range(0, len(ids), 500):
        conn.execute(
            d.update()
            .where(d.c.request_id.in_(ids[start : start + 500]))
            .values(
                state="superseded",
                action=d.c.action_masked,
                error="superseded by a newer transition (found when the journal was upgraded)",
            )
        )


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
    _supersede_stale_open_rows(conn)
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
