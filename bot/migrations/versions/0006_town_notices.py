"""town notices written by the CM

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 12:30:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notice",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("topic", sa.String(64)),
        sa.Column("service", sa.String(32)),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=False),
        sa.Column("closes_town_hall", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("ended_by", sa.String(64)),
    )
    op.create_index("ix_notice_ends_on", "notice", ["ends_on"])


def downgrade() -> None:
    op.drop_index("ix_notice_ends_on", table_name="notice")
    op.drop_table("notice")
