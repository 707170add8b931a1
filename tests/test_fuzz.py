"""Property-based tests (hypothesis) for the text paths of the domain: any unicode text, NUL and lone
surrogates included, goes through normalisation, routing, location, kind and danger detection,
reference parsing, and the ticket table on SQLite and PostgreSQL, without an error."""
from __future__ import annotations

import time
import unicodedata

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from bot import location, routing, safety
from bot.accounts import Staff
from bot.staff import DeskError, StaffDesk
from bot.textnorm import clean_citizen_text, fold
from bot.tickets import (NewTicket, TicketStore, format_reference, parse_reference, parse_staff_reference,
                         storable)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DB = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow])
SPECIALS = ["\x00", "\ud800", "\udfff", "\ud83d", "\ude00", "\u200d", "\u200b", "\ufeff", "\u202e", "\x1b", "\r",
            "\n", "\t", " ", "é", "É", "ß", "İ", "ﬁ", "👍", "🏽", "'", "’", "%", "\\", "<", "{", "°", "n°", "T-2026-"]
ANY_CHAR = st.one_of(st.characters(exclude_categories=()), st.sampled_from(SPECIALS))
ANY_TEXT = st.lists(ANY_CHAR, max_size=300).map("".join)
FRENCH = st.lists(st.sampled_from(list("abcdefghijklmnopqrstuvwxyzéèàçùêô '’-,.!?") +
                                  ["rue ", "gaz ", "feu ", "devant ", "au 12 ", "lampadaire ", "trou "]),
                  max_size=80).map("".join)
TEXT = st.one_of(ANY_TEXT, FRENCH)
REASONS = {None, "distress_danger", "distress_violence", "distress_suicide"}


def no_bad_chars(text: str) -> bool:
    return "\x00" not in text and not any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


# --- normalisation ----------------------------------------------------------------------------

@FAST
@given(TEXT)
def test_fold_is_total_and_tidy(text):
    folded = fold(text)
    assert isinstance(folded, str)
    assert folded == folded.strip() and "  " not in folded
    assert fold(folded) == fold(fold(folded))  # stable after one more pass


@FAST
@given(TEXT, st.integers(min_value=2, max_value=5000))
@example("0\xa00", 3)  # a no-break space is text, not a control character
def test_clean_citizen_text_is_safe_bounded_and_idempotent(text, limit):
    cleaned = clean_citizen_text(text, limit)
    assert len(cleaned) <= limit and no_bad_chars(cleaned)
    # No control or format characters (NUL, ESC, bidi overrides...) but line breaks, tabs and the
    # emoji joiner; ordinary spaces of any kind (a French no-break space before "?") are kept.
    assert all(ch in "\n\t\u200d" or unicodedata.category(ch)[0] != "C" for ch in cleaned)
    assert "\x1b" not in cleaned and "\u202e" not in cleaned
    assert cleaned == cleaned.strip()
    assert clean_citizen_text(cleaned, limit) == cleaned
    assert cleaned == "" or cleaned.replace("\u200d", "").strip()  # never only invisible characters
    assert clean_citizen_text(None) == ""


@FAST
@given(TEXT)
def test_storable_only_removes_what_no_database_keeps(text):
    kept = storable(text)
    assert no_bad_chars(kept)
    if no_bad_chars(text):
        assert kept == text
    assert storable(kept) == kept
    kept.encode("utf-8")  # always encodable


# --- routing, location, kind, safety ----------------------------------------------------------

@FAST
@given(TEXT, st.sampled_from(["report", "request", "complaint", "handoff", "", "x"]))
def test_routing_location_and_kind_never_fail(profile, text, kind):
    service = routing.service_from_keywords(text, profile)
    assert service is None or service in profile.services
    for slug in [*profile.services, None]:
        assert isinstance(routing.needs_location(slug, kind, text, profile), bool)
    assert routing.service_for_intent(text, profile) in (None, *profile.services)
    assert routing.service_for_intent(f"ticket_{text}", profile) in (None, *profile.services)
    assert isinstance(location.mentions_location(text), bool)
    place = location.extract_location(text)
    assert place is None or (len(place) <= 300 and location.mentions_location(text))
    assert isinstance(location.is_vague_place(text), bool)
    assert safety.danger_reason(text) in REASONS


@FAST
@given(FRENCH, FRENCH, st.sampled_from(["ça sent le gaz", "il y a le feu", "odeur de gaz", "incendie",
                                        "il ne respire plus", "je veux mourir", "il me frappe"]))
def test_danger_words_always_call_for_the_emergency_numbers(before, after, words):
    """Whatever surrounds them, these words give an urgent reason."""
    assert safety.danger_reason(f"{before} {words} {after}") is not None


@FAST
@given(FRENCH, st.sampled_from(["devant le 12 rue des Tilleuls", "place de la Gare", "avenue Jean Jaurès",
                                "à côté de l'école"]))
def test_a_street_is_always_a_location(before, place):
    assert location.mentions_location(f"{before} {place}")


@pytest.mark.parametrize("text", [
    "gaz " * 1000, "rue " * 1000, "au " * 1300, "devant " * 600, "a" * 4000, "t-2026-" * 500, "ticket " * 500,
    "enfant " * 550 + "x", "🤬!!" * 1300, "depuis des " * 360, "n° " * 1300, "École " * 650,
])
def test_no_slow_regular_expression_on_long_messages(profile, text):
    """A 4,000-character message (the cleaning limit) is analysed in well under a second."""
    text = clean_citizen_text(text)
    start = time.perf_counter()
    safety.danger_reason(text)
    location.mentions_location(text)
    location.is_vague_place(text)
    routing.service_from_keywords(text, profile)
    parse_reference(text)
    assert time.perf_counter() - start < 1.0


# --- references ---------------------------------------------------------------------------------

@FAST
@given(st.integers(min_value=2000, max_value=2099), st.integers(min_value=0, max_value=999_999),
       st.text(alphabet=st.sampled_from(list("abcdefghijklmnopqrsuvwxyz éàç?!,.")), max_size=40))
def test_reference_round_trip(year, number, words):
    reference = format_reference(year, number)
    assert parse_reference(reference) == (year, number)
    assert parse_reference(f"{words} {reference} {words}") == (year, number)
    assert parse_reference(reference.lower().replace("-", "")) == (year, number)
    assert parse_staff_reference(reference) == (year, number)
    assert parse_staff_reference(f"  {reference.lower()} ") == (year, number)
    assert parse_staff_reference(f"{words}x {reference}") is None


@FAST
@given(TEXT)
def test_reference_parsers_never_fail(text):
    parsed = parse_reference(text)
    assert parsed is None or (0 <= parsed[1] <= 999_999 and (parsed[0] is None or 2000 <= parsed[0] <= 2099))
    strict = parse_staff_reference(text)
    if strict is not None:
        assert parse_reference(format_reference(strict[0] or 2026, strict[1])) == (strict[0] or 2026, strict[1])
        assert no_bad_chars(text) and len(text.strip()) <= 40


# --- the ticket table on SQLite and PostgreSQL ----------------------------------------------------

@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request, database_url) -> TicketStore:
    if request.param == "postgres":
        return request.getfixturevalue("pg_store")
    return TicketStore(database_url)


@DB
@given(summary=TEXT, location_text=st.one_of(st.none(), TEXT), name=st.one_of(st.none(), TEXT),
       conversation=st.lists(ANY_CHAR, min_size=1, max_size=80).map("".join), line=TEXT, extra=TEXT)
def test_tickets_store_any_text_and_read_it_back(any_store, summary, location_text, name, conversation, line, extra):
    assume(storable(conversation))
    ticket, created = any_store.create(NewTicket(kind="report", queue="voirie", conversation_id=conversation,
                                                 channel="rest", summary=summary, location=location_text,
                                                 citizen_name=name))
    assert created
    message = any_store.add_message(conversation, "rest", "citizen", line, ticket_id=ticket.id, author_name=name)
    any_store.append_summary(ticket.id, extra)
    any_store.update_location(ticket.id, extra)
    any_store.set_status(ticket.id, "acknowledged", "agent", note=line)
    stored = any_store.get(ticket.id)
    assert stored.summary == f"{storable(summary)}\n{storable(extra)}"
    assert stored.conversation_id == storable(conversation)
    assert stored.citizen_name == ((storable(name) or "")[:200] or None)
    expected_location = storable(extra) if not storable(location_text) else f"{storable(location_text)} / {storable(extra)}"
    assert stored.location == expected_location
    [read] = [m for m in any_store.transcript(ticket.id) if m.id == message.id]
    assert read.text == storable(line) and read.conversation_id == storable(conversation)
    assert [t.id for t in any_store.for_conversation(storable(conversation))][0] == ticket.id
    assert any_store.by_reference(ticket.reference).id == ticket.id


def test_conversation_ids_are_bounded_the_same_everywhere(any_store):
    for bad in ("", "\x00", "x" * 256):
        with pytest.raises(ValueError):
            any_store.add_message(bad, "rest", "citizen", "bonjour")
    assert any_store.add_message("x" * 255, "rest", "citizen", "bonjour").id


@DB
@given(text=TEXT)
def test_staff_reply_and_note_take_any_text(any_store, assistant, text):
    desk = StaffDesk(any_store, assistant.profile, assistant.hours, assistant.replies,
                     resume_conversation=lambda _c: None)
    ticket, _ = any_store.create(NewTicket(kind="handoff", queue="cm", conversation_id="conv-fuzz", channel="rest",
                                           summary="parler à quelqu'un"))
    cm = Staff("camille", "Camille", "cm")
    expected = clean_citizen_text(text, 10_000)
    try:
        reply = desk.reply(cm, ticket.reference, text)
    except DeskError as exc:
        assert not expected or len(expected) > 3000, exc
    else:
        assert reply.text == f"{expected}\n— L'équipe Communication"
    try:
        note = desk.note(cm, ticket.reference, text)
    except DeskError:
        assert not expected or len(expected) > 5000
    else:
        assert note.text == expected and note.private
    for reference in (text, f"T-2026-{text}"):
        try:
            desk.ticket(cm, reference)
        except DeskError:
            pass
