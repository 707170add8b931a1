"""Meta (Messenger, Instagram): contacts and their 24-hour window, public comments, outbox surface

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 15:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.add_column(sa.Column("surface", sa.String(16), nullable=True))
        batch_op.add_column(sa.Column("failed_at", sa.DateTime(), nullable=True))
    op.create_table(
        "meta_contact",
        sa.Column("conversation_id", sa.String(255), primary_key=True),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("comment_id", sa.String(128), nullable=True),
        sa.Column("last_inbound_at", sa.DateTime(), nullable=True),
        sa.Column("private_reply_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_meta_contact_user_id", "meta_contact", ["user_id"])
    op.create_table(
        "public_comment",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("comment_id", sa.String(128), nullable=False, unique=True),
        sa.Column("post_id", sa.String(128), nullable=False),
        sa.Column("thread_id", sa.String(128), nullable=False),
        sa.Column("author_id", sa.String(128), nullable=True),
        sa.Column("author_name", sa.String(200), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("permalink", sa.String(500), nullable=True),
        sa.Column("conversation_id", sa.String(255), nullable=False),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("ticket.id", ondelete="SET NULL"), nullable=True),
        sa.Column("outcome", sa.String(64), nullable=True),
        sa.Column("treatment", sa.String(32), nullable=True),
        sa.Column("public_reply", sa.Text(), nullable=True),
        sa.Column("public_reply_id", sa.String(128), nullable=True),
        sa.Column("private_reply_at", sa.DateTime(), nullable=True),
        sa.Column("staff_answered_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("handled_at", sa.DateTime(), nullable=True),
    )
    for column in ("post_id", "thread_id", "conversation_id", "ticket_id", "created_at"):
        op.create_index(f"ix_public_comment_{column}", "public_comment", [column])


def downgrade() -> None:
    op.drop_table("public_comment")
    op.drop_table("meta_contact")
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_column("failed_at")
        batch_op.drop_column("surface")
