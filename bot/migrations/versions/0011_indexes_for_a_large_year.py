"""indexes for a large year: open tickets, periods of the statistics, what the purge has left to do

Measured by ``python -m bot.data_bench`` (README "Costs as the data grows"): 60,000 tickets,
1,000,000 transcript lines and 200,000 conversations a year. The partial indexes hold only the
rows still to handle (open tickets, tickets not anonymised, lines not redacted), so they stay
small however many years the database keeps. Rasa's tracker table ``events`` gets an index on
``timestamp`` for the purge when it is already there (``bot.privacy`` adds it otherwise).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 18:05:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

# As in bot.models (the queries' own conditions, so that PostgreSQL picks the partial indexes).
OPEN_TICKET = "status NOT IN ('resolved', 'duplicate', 'closed')"
NOT_ANONYMISED = "anonymised_at IS NULL"
UNLINKED_NOT_REDACTED = "ticket_id IS NULL AND text <> '[effacé]'"


def _partial(condition: str) -> dict:
    return {"postgresql_where": sa.text(condition), "sqlite_where": sa.text(condition)}


def upgrade() -> None:
    op.create_index("ix_ticket_open", "ticket", ["queue", "created_at"], **_partial(OPEN_TICKET))
    op.create_index("ix_ticket_created_at", "ticket", ["created_at"])
    op.create_index("ix_ticket_satisfaction_at", "ticket", ["satisfaction_at"])
    op.create_index("ix_ticket_closed_not_anonymised", "ticket", ["closed_at"], **_partial(NOT_ANONYMISED))
    op.create_index("ix_message_author_created", "message", ["author", "created_at", "conversation_id"])
    op.create_index("ix_message_unlinked_created", "message", ["created_at"], **_partial(UNLINKED_NOT_REDACTED))
    op.create_index("ix_public_comment_treatment", "public_comment", ["treatment"])  # the comments to see
    if sa.inspect(op.get_bind()).has_table("events"):
        op.create_index("ix_events_timestamp", "events", ["timestamp"])


def downgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("events"):
        op.drop_index("ix_events_timestamp", table_name="events")
    op.drop_index("ix_public_comment_treatment", table_name="public_comment")
    op.drop_index("ix_message_unlinked_created", table_name="message")
    op.drop_index("ix_message_author_created", table_name="message")
    op.drop_index("ix_ticket_closed_not_anonymised", table_name="ticket")
    op.drop_index("ix_ticket_satisfaction_at", table_name="ticket")
    op.drop_index("ix_ticket_created_at", table_name="ticket")
    op.drop_index("ix_ticket_open", table_name="ticket")
