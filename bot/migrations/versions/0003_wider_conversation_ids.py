"""wider conversation and message ids (Rasa allows 255-character sender ids)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 05:40:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

COLUMNS = (
    ("ticket", "conversation_id", False),
    ("ticket", "source_message_id", True),
    ("message", "conversation_id", False),
    ("message", "external_id", True),
    ("outbox", "conversation_id", False),
)


def _alter(length_from: int, length_to: int) -> None:
    for table, column, nullable in COLUMNS:
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=length_from),
                                  type_=sa.String(length=length_to), existing_nullable=nullable)


def upgrade() -> None:
    _alter(128, 255)


def downgrade() -> None:
    _alter(255, 128)
