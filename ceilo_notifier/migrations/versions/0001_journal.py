"""The journal: deliveries and their events.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("alarm_id", sa.String(255), nullable=False, index=True),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("action_masked", sa.Text, nullable=False),
        sa.Column("scheme", sa.String(64)),
        sa.Column("notification", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "delivery_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), index=True),
        sa.Column("alarm_id", sa.String(255), index=True),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("scheme", sa.String(64)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("duration", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False, index=True),
    )
