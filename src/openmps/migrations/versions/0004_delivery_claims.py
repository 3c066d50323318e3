"""Vendor delivery claims for the scale-out mode: which worker is sending a delivery now.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from openmps.store.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(64)))
        batch.add_column(sa.Column("claimed_at", UTCDateTime()))
    op.create_index("ix_deliveries_pending_route", "deliveries", ["final", "route", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_pending_route", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("claimed_at")
        batch.drop_column("claimed_by")
