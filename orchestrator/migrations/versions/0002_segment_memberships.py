"""segment memberships

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:00:00

One row per (customer, named segment) the customer is in, so the engine can announce a
change of membership as ``segment.entered`` / ``segment.exited``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "segment_memberships",
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("segment", sa.String(length=64), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "segment"),
    )


def downgrade() -> None:
    op.drop_table("segment_memberships")
