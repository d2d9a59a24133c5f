"""Retries parked out of memory: when each is due, read back by the service that parked it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("parked_until", sa.DateTime(timezone=True)))
    op.create_index("ix_deliveries_parked_until", "deliveries", ["parked_until"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_parked_until", "deliveries")
    op.drop_column("deliveries", "parked_until")
