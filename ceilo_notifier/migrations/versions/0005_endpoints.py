"""Endpoint health: the shared state of held endpoints, and each delivery's endpoint.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

Rows journaled before have no endpoint: they are never released early by an
endpoint closing, only read back when due, as before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ENDPOINT_LENGTH = 320


def upgrade() -> None:
    op.create_table(
        "endpoints",
        sa.Column("endpoint", sa.String(ENDPOINT_LENGTH), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True)),
        sa.Column("open_for", sa.Float, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(255), nullable=False),
    )
    op.create_index("ix_endpoints_changed_at", "endpoints", ["changed_at"])
    op.add_column("deliveries", sa.Column("endpoint", sa.String(ENDPOINT_LENGTH)))
    op.create_index("ix_deliveries_endpoint", "deliveries", ["endpoint"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_endpoint", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("endpoint")
    op.drop_index("ix_endpoints_changed_at", "endpoints")
    op.drop_table("endpoints")
