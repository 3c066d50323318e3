"""Deliveries without foreign keys: the per-row checks made a broadcast's expansion slow.

A broadcast writes one delivery per device. On PostgreSQL every inserted row ran two foreign
key checks, each locking the referenced device or message row (``FOR KEY SHARE``): for a
million devices that dirtied every page of ``devices`` and took about 60% of the expansion
(37 s of 1,000,000 rows against 15 s without the checks, bench/broadcast.py). The product
writes delivery rows only from message and device rows it has just read and never deletes
either, so the checks guarded nothing the code does. See docs/decisions.md.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_REFERENCES = (("message_pk", "messages", "CASCADE"), ("device_pk", "devices", "SET NULL"))
# SQLite's foreign keys have no names: batch mode names them by this rule to drop them.
_CONVENTION = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _name(column: str, table: str) -> str:
    return f"fk_deliveries_{column}_{table}"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        with op.batch_alter_table("deliveries", naming_convention=_CONVENTION) as batch:
            for column, table, _ in _REFERENCES:
                batch.drop_constraint(_name(column, table), type_="foreignkey")
        return
    for key in sa.inspect(bind).get_foreign_keys("deliveries"):
        name = key["name"]
        assert name is not None  # PostgreSQL names every constraint
        op.drop_constraint(name, "deliveries", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("deliveries", naming_convention=_CONVENTION) as batch:
        for column, table, on_delete in _REFERENCES:
            batch.create_foreign_key(
                _name(column, table), table, [column], ["id"], ondelete=on_delete
            )
