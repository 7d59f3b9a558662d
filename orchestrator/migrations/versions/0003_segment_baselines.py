"""segment baselines

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 22:00:00

One row per named segment whose memberships a full sweep has recorded, with the condition
it recorded them for. Until then (and after the condition changes) a sweep records who is
in the segment without announcing ``segment.entered``: a journey starts customers as they
become members, not the whole existing base on the day it is deployed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "segment_baselines",
        sa.Column("segment", sa.String(length=64), nullable=False),
        sa.Column("condition", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("segment"),
    )


def downgrade() -> None:
    op.drop_table("segment_baselines")
