"""satisfaction after closing (ticket) and buttons of outbox messages

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 13:30:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ticket") as batch_op:
        batch_op.add_column(sa.Column("satisfaction_asked_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("satisfaction", sa.String(8), nullable=True))
        batch_op.add_column(sa.Column("satisfaction_comment", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("satisfaction_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.add_column(sa.Column("buttons", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_column("buttons")
    with op.batch_alter_table("ticket") as batch_op:
        for name in ("satisfaction_at", "satisfaction_comment", "satisfaction", "satisfaction_asked_at"):
            batch_op.drop_column(name)
