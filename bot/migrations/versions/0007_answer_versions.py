"""FAQ answers edited on the staff web page, every version kept

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 13:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "answer_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("link", sa.String(500), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("reviewed_by", sa.String(64)),
        sa.Column("reviewed_at", sa.DateTime()),
        sa.Column("note", sa.Text()),
    )
    op.create_index("ix_answer_version_topic", "answer_version", ["topic"])


def downgrade() -> None:
    op.drop_index("ix_answer_version_topic", table_name="answer_version")
    op.drop_table("answer_version")
