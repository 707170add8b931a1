"""Places with the real assistant (Rasa + action server), the town's addresses loaded: the place
understood on the ticket and shown to the citizen, a pin as the nearest address, « déjà signalé »
for a second citizen, "non, c'est un autre problème", and the status news reaching both."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import requests

from bot import places
from bot.accounts import Accounts
from bot.followers import Followers
from bot.staff import StaffDesk
from bot.tickets import TicketStore

pytestmark = pytest.mark.slow
REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "reference"


@pytest.fixture(scope="module")
def town(stack):
    store = TicketStore(stack.database_url)
    places.load(store, REFERENCE / "valbourg-adresses.csv", REFERENCE / "valbourg-lieux.csv")
    return store


def say(stack, sender: str, text: str) -> list[str]:
    answer = requests.post(f"{stack.rasa_url}/webhooks/guichet/webhook", json={
        "sender": sender, "message": text, "message_id": uuid.uuid4().hex}, timeout=120)
    return [m.get("text", "") for m in answer.json()]


def collect(stack, sender: str) -> list[str]:
    return [m["text"] for m in requests.get(f"{stack.rasa_url}/webhooks/guichet/outbox",
                                            params={"sender": sender}, timeout=10).json()]


def test_the_place_is_understood_and_a_second_citizen_follows_the_first_ticket(stack, town, assistant):
    first, second, third = (f"web-places-{uuid.uuid4().hex[:8]}" for _ in range(3))
    replies = say(stack, first, "le lampadaire devant le 12 rue des tilleuls ne s'allume plus")
    [ticket] = town.for_conversation(first)
    assert ticket.queue == "voirie" and ticket.place_label == "12 Rue des Tilleuls" and ticket.lat is not None
    assert any("Lieu compris : 12 Rue des Tilleuls" in r for r in replies)

    # Another citizen, a few numbers further: the same problem, already known.
    replies = say(stack, second, "lampadaire eteint au 16 rue des Tilleuls depuis hier soir")
    assert any("déjà été signalé" in r and ticket.reference in r for r in replies), replies
    assert town.for_conversation(second) == []
    assert [f.conversation_id for f in Followers(town).of_ticket(ticket.id)] == [second]
    assert any(m.text.startswith("[déjà signalé]") for m in town.transcript(ticket.id))
    status = " ".join(say(stack, second, "où en est mon signalement ?"))
    assert ticket.reference in status  # the ticket they follow is theirs too

    # A third says it is another problem: a ticket of their own.
    replies = say(stack, third, "le lampadaire du 14 rue des tilleuls clignote")
    assert any("déjà été signalé" in r for r in replies), replies
    replies = say(stack, third, "non, c'est un autre problème")
    [own] = town.for_conversation(third)
    assert own.id != ticket.id and own.queue == "voirie" and any(own.reference in r for r in replies)

    # The service moves the first ticket along: its citizen and its follower both hear it.
    desk = StaffDesk(town, assistant.profile, assistant.hours, assistant.replies)
    Accounts(town, assistant.profile).create("victor", "motdepasse-solide", "head", "voirie", display_name="Victor")
    desk.set_status(Accounts(town, assistant.profile).get("victor"), ticket.reference, "in_progress")
    assert any(ticket.reference in t for t in collect(stack, first))
    assert any(ticket.reference in t for t in collect(stack, second))
    assert not any(ticket.reference in t for t in collect(stack, third))


def test_a_pin_is_the_nearest_address_and_devant_chez_moi_is_not_a_place(stack, town):
    sender = f"web-pin-{uuid.uuid4().hex[:8]}"
    spot = places.match(town, "8 rue Pasteur")
    say(stack, sender, "il y a un dépôt sauvage de sacs poubelles")
    replies = say(stack, sender, f"au niveau du point GPS {spot.lat:.5f}, {spot.lon:.5f}")
    [ticket] = town.for_conversation(sender)
    assert ticket.place_kind == "pin" and "Rue Pasteur" in ticket.place_label
    assert any("Lieu compris : près du" in r and "Rue Pasteur" in r for r in replies), replies

    vague = f"web-vague-{uuid.uuid4().hex[:8]}"
    say(stack, vague, "un nid de poule énorme")
    replies = say(stack, vague, "devant chez moi")
    assert town.for_conversation(vague) == [] and any("rue" in r.lower() for r in replies)
