"""places (BAN addresses, named places), the understood place of a ticket, followers, Open311 keys

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 15:20:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ticket") as batch_op:
        batch_op.add_column(sa.Column("place_label", sa.String(300), nullable=True))
        batch_op.add_column(sa.Column("place_kind", sa.String(16), nullable=True))
        batch_op.add_column(sa.Column("place_confidence", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("lat", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("lon", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("open311_token", sa.String(64), nullable=True))
        batch_op.create_unique_constraint("uq_ticket_open311_token", ["open311_token"])
    op.create_table(
        "address",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ban_id", sa.String(64), nullable=True, unique=True),
        sa.Column("number", sa.String(16), nullable=True),
        sa.Column("suffix", sa.String(16), nullable=True),
        sa.Column("street", sa.String(200), nullable=False),
        sa.Column("street_key", sa.String(200), nullable=False),
        sa.Column("postcode", sa.String(10), nullable=True),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
    )
    op.create_index("ix_address_street_key", "address", ["street_key"])
    op.create_table(
        "named_place",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("name_key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(64), nullable=True),
        sa.Column("number", sa.String(16), nullable=True),
        sa.Column("street", sa.String(200), nullable=True),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
    )
    op.create_index("ix_named_place_name_key", "named_place", ["name_key"])
    op.create_table(
        "ticket_follower",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("ticket.id", ondelete="CASCADE"), nullable=False),
        sa.Column("conversation_id", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("citizen_name", sa.String(200), nullable=True),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.Column("left_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_ticket_follower_ticket_id", "ticket_follower", ["ticket_id"])
    op.create_index("ix_ticket_follower_conversation_id", "ticket_follower", ["conversation_id"])
    op.create_index("ux_ticket_follower", "ticket_follower", ["ticket_id", "conversation_id"], unique=True)
    op.create_table(
        "open311_key",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("open311_key")
    op.drop_table("ticket_follower")
    op.drop_table("named_place")
    op.drop_table("address")
    with op.batch_alter_table("ticket") as batch_op:
        batch_op.drop_constraint("uq_ticket_open311_token", type_="unique")
        for name in ("open311_token", "lon", "lat", "place_confidence", "place_kind", "place_label"):
            batch_op.drop_column(name)
