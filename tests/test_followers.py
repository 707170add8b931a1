"""« Déjà signalé »: duplicates by service, distance and period; followers told on their own channels;
merge and split by staff; "non, c'est un autre problème"."""
from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import select

from bot.accounts import Accounts
from bot.assistant import Conversation, TicketDraft
from bot.followers import Followers, distance_m
from bot.models import Outbox
from bot.staff import DeskError, StaffDesk
from bot.tickets import NewTicket

TILLEULS = (47.3790, -0.3920)  # two points about 110 m apart, then one about 450 m away
NEAR = (47.3800, -0.3920)
FAR = (47.3830, -0.3920)


@pytest.fixture
def desk(store, assistant):
    accounts = Accounts(store, assistant.profile)
    accounts.create("camille", "motdepasse-solide", "cm", display_name="Camille")
    accounts.create("victor", "motdepasse-solide", "head", "voirie", display_name="Victor")
    return StaffDesk(store, assistant.profile, assistant.hours, assistant.replies)


def report(store, conversation, where, queue="voirie", channel="telegram", created=None, status=None):
    ticket, _ = store.create(NewTicket(kind="report", queue=queue, conversation_id=conversation, channel=channel,
                                       summary="lampadaire éteint", location="rue des Tilleuls"),
                             now=created or dt.datetime.now(dt.timezone.utc))
    store.set_place(ticket.id, "12 Rue des Tilleuls", "address", 0.9, *where)
    if status:
        store.set_status(ticket.id, status, "test")
    return store.get(ticket.id)


def outbox(store, conversation):
    with store.session() as session:
        return [o.text for o in session.execute(select(Outbox).where(Outbox.conversation_id == conversation)
                                                .order_by(Outbox.id)).scalars()]


def test_a_duplicate_is_the_same_service_nearby_open_and_recent(store, profile):
    assert 100 < distance_m(*TILLEULS, *NEAR) < 120 and 400 < distance_m(*TILLEULS, *FAR) < 500
    followers = Followers(store, profile)
    original = report(store, "telegram-1", TILLEULS)
    found = followers.duplicate_of("voirie", *NEAR, "web-2")
    assert found and found[0].id == original.id and 100 < found[1] < 120
    assert followers.duplicate_of("voirie", *FAR, "web-2") is None  # outside the 250 m radius
    assert followers.duplicate_of("proprete", *NEAR, "web-2") is None  # another service
    assert followers.duplicate_of("voirie", *NEAR, "telegram-1") is None  # their own ticket
    assert followers.duplicate_of("voirie", None, None, "web-2") is None  # no position: no guess

    report(store, "telegram-3", (47.40, -0.40), status="resolved")
    assert followers.duplicate_of("voirie", 47.40, -0.40, "web-2") is None  # closed
    report(store, "telegram-4", (47.41, -0.41), created=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40))
    assert followers.duplicate_of("voirie", 47.41, -0.41, "web-2") is None  # older than the 30 days

    services = dict(profile.services)
    services["voirie"] = dataclasses.replace(services["voirie"], duplicate_radius_m=0)
    assert Followers(store, dataclasses.replace(profile, services=services)).duplicate_of("voirie", *NEAR, "web-2") is None


def test_the_citizen_follows_hears_every_status_and_can_say_it_is_another_problem(store, assistant, desk):
    original = report(store, "telegram-1", TILLEULS)
    conversation = Conversation("web-2", "webchat")
    draft = TicketDraft(service="voirie", kind="report", description="le lampadaire ne marche plus",
                        location="devant le 14 rue des Tilleuls")
    now = dt.datetime.now(dt.timezone.utc)
    reply = assistant.follow_duplicate(original, draft, conversation, now)
    assert original.reference in reply.texts[0] and "déjà été signalé" in reply.texts[0]
    assert reply.outcome == "ticket:voirie"
    assert any(m.text.startswith("[déjà signalé] le lampadaire ne marche plus") for m in store.transcript(original.id))
    assert [f.conversation_id for f in Followers(store).of_ticket(original.id)] == ["web-2"]
    assert store.citizen_lookup("web-2", "où en est mon signalement ?")[1][0].id == original.id  # theirs too

    victor = Accounts(store, assistant.profile).get("victor")
    desk.set_status(victor, original.reference, "in_progress")
    assert any(original.reference in t for t in outbox(store, "telegram-1"))
    assert any(original.reference in t for t in outbox(store, "web-2"))  # both channels

    # "Non, c'est un autre problème": their own ticket, and that one is never proposed again.
    other = assistant.another_problem(conversation, "deny", now)
    assert other is not None and other.ticket.id != original.id and other.ticket.conversation_id == "web-2"
    assert "le lampadaire ne marche plus" in other.ticket.summary and other.ticket.queue == "voirie"
    assert Followers(store).of_ticket(original.id) == []
    assert Followers(store, assistant.profile).duplicate_of("voirie", *NEAR, "web-2") is None
    assert assistant.another_problem(conversation, "deny", now) is None  # a later "non" is just "non"


def test_staff_merge_moves_the_followers_and_split_gives_one_its_own_ticket(store, assistant, desk):
    camille = Accounts(store, assistant.profile).get("camille")
    first = report(store, "telegram-1", TILLEULS)
    second = report(store, "messenger-2", FAR)
    Followers(store).follow(second.id, "web-3", "webchat", "Paul")
    desk.set_status(camille, second.reference, "duplicate", duplicate_of=first.reference)
    moved = [f.conversation_id for f in desk.followers(camille, first.reference)]
    assert moved == ["messenger-2", "web-3"]  # the merged ticket's citizen and its follower
    assert any(first.reference in t for t in outbox(store, "web-3"))  # told it is the same problem

    follower = desk.followers(camille, first.reference)[1]
    new = desk.split_follower(camille, first.reference, follower.id)
    assert new.conversation_id == "web-3" and new.queue == "voirie" and new.id not in (first.id, second.id)
    assert [f.conversation_id for f in desk.followers(camille, first.reference)] == ["messenger-2"]
    assert any(new.reference in t for t in outbox(store, "web-3"))
    with pytest.raises(DeskError, match="ne suit pas"):
        desk.split_follower(camille, first.reference, follower.id)
