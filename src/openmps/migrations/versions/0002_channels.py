"""Vendor channels: per-app channel settings and the routing policy.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from openmps.store.models import Id, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_configs",
        sa.Column("id", Id, primary_key=True),
        sa.Column("app_pk", Id, sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("vendor", sa.String(16), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("base_url", sa.String(512)),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("app_pk", "vendor", name="uq_channel_configs_app_vendor"),
    )
    with op.batch_alter_table("apps") as batch:
        batch.add_column(
            sa.Column("route_policy", sa.String(16), nullable=False, server_default="own_first")
        )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("attempts")
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("route_policy")
    op.drop_table("channel_configs")
