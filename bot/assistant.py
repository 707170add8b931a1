"""What the assistant says and does for each kind of citizen message.

Rasa decides *which* of these to call (intents, rules, the ticket form); this module decides the
words and the side effects (tickets, hand-offs), from the profile, the staff hours and the ticket
table. Every reply carries its outcome tag so evaluation reads what the assistant did.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache

import logging

from bot import events, satisfaction
from bot.followers import Followers
from bot.answers import Answers, FaqAnswer
from bot.hours import StaffHours
from bot.kinds import COMPLAINT, HANDOFF, settle_kind
from bot.location import extract_location
from bot.models import Ticket
from bot.notices import Notices
from bot.profile import Profile, load_profile
from bot.replies import Replies
from bot.routing import CM_QUEUE, needs_location, service_for_intent, service_from_keywords
from bot.settings import get_settings
from bot.tickets import NewTicket, TicketStore

GPS_PIN = re.compile(r"point GPS (-?\d{1,3}\.\d+), (-?\d{1,3}\.\d+)")  # how the gateways write a shared pin

HANDOFF_REASONS = (
    "human_request", "insult", "threat", "press", "legal", "person_complaint", "personal_data", "complaint",
    "misunderstood", "distress_violence", "distress_danger", "distress_suicide",
)
URGENT_REASONS = ("distress_violence", "distress_danger", "distress_suicide")
SMALLTALK = ("greet", "thank", "goodbye", "bot_challenge", "affirm", "deny", "compliment")
OUT_OF_SCOPE = ("out_of_scope", "spam", "tag_friend")
logger = logging.getLogger(__name__)


@dataclass
class Reply:
    texts: list[str]
    outcome: str | None = None  # "faq:piscine", "ticket:voirie", "handoff", "decline"...
    ticket: Ticket | None = None
    pause: bool = False  # hand-off: the bot stays silent until the CM closes the ticket


@dataclass(frozen=True)
class Conversation:
    id: str
    channel: str = "rest"
    citizen_name: str | None = None
    message_id: str | None = None


@dataclass
class TicketDraft:
    """A report/request/complaint being put together, one question at a time."""

    service: str | None
    kind: str
    description: str
    location: str | None = None
    need_location: bool = False
    need_detail: bool = False


class Assistant:
    def __init__(self, profile: Profile, store: TicketStore, replies: Replies, hours: StaffHours,
                 notices: Notices | None = None):
        self.profile = profile
        self.store = store
        self.replies = replies
        self.hours = hours
        self.notices = notices if notices is not None else Notices(store, profile)
        self.answers = Answers(store, profile)
        self._hours_with_closures: dict[frozenset, StaffHours] = {}

    def staff_hours(self, now: dt.datetime) -> StaffHours:
        """The staff hours, with the days a town notice closes the town hall."""
        try:
            closed = self.notices.closed_days(self.hours.local(now).date())
        except Exception as exc:  # noqa: BLE001 - the answer must not depend on the notices table
            logger.warning("could not read the town notices: %s", type(exc).__name__)
            return self.hours
        if not closed:
            return self.hours
        key = frozenset(closed.items())
        if key not in self._hours_with_closures:
            if len(self._hours_with_closures) > 32:
                self._hours_with_closures.clear()
            self._hours_with_closures[key] = self.hours.with_closed_days(closed)
        return self._hours_with_closures[key]

    def _notices(self, now: dt.datetime, **scope) -> list[str]:
        try:
            texts = self.notices.texts_for(self.hours.local(now).date(), **scope)
        except Exception as exc:  # noqa: BLE001 - the answer must not depend on the notices table
            logger.warning("could not read the town notices: %s", type(exc).__name__)
            return []
        return [self.replies.render("notice", now=now, text=text) for text in texts]

    # --- plain answers --------------------------------------------------------------------------
    def _say(self, key: str, now: dt.datetime, **context) -> str:
        if self.replies.uses(key, "when"):  # when a person will read it: only for the replies that say so
            context["when"] = self.staff_hours(now).when_read(now)
        return self.replies.render(key, now=now, **context)

    def smalltalk(self, intent: str, now: dt.datetime) -> Reply:
        key = intent if intent in SMALLTALK else "greet"
        texts = [self._say(f"smalltalk.{key}", now)]
        if key == "greet":  # a town-wide notice is said when someone says hello
            texts += self._notices(now, town_wide=True)
        return Reply(texts, "smalltalk")

    def faq(self, topic: str, now: dt.datetime) -> Reply:
        entry = self.profile.faq.get(topic)
        if entry is None:
            return self.clarify(now)
        answer = self.answer_for(topic, entry)
        texts = [self._say("faq", now, answer=answer.text, link=answer.link)] + self._notices(now, topic=topic)
        return Reply(texts, f"faq:{topic}")

    def answer_for(self, topic: str, entry):
        """The answer of a FAQ topic as the CM last edited it on the web, or the profile's."""
        try:
            return self.answers.current(topic)
        except Exception as exc:  # noqa: BLE001 - the profile's answer is always there
            logger.warning("could not read the edited answers: %s", type(exc).__name__)
            return FaqAnswer(entry.answer, entry.link)

    def preview_faq(self, topic: str, text: str, link: str, now: dt.datetime) -> list[str]:
        """What the assistant would say with this answer (the staff page's preview)."""
        return [self._say("faq", now, answer=text, link=link)] + self._notices(now, topic=topic)

    def satisfaction_answer(self, conversation: Conversation, intent: str, text: str | None,
                            now: dt.datetime) -> Reply | None:
        """The answer to "Êtes-vous satisfait(e) ?" when this conversation was just asked; else None."""
        answer = satisfaction.answer_of(intent)
        if answer is None:
            return None
        ticket = satisfaction.pending(self.store, conversation.id, now)
        if ticket is None:
            return None
        satisfaction.record(self.store, ticket.id, answer, text)
        return Reply([self._say(f"satisfaction.thanks_{answer}", now)], "smalltalk")

    def decline(self, now: dt.datetime) -> Reply:
        return Reply([self._say("decline", now)], "decline")

    def out_of_scope(self, now: dt.datetime, intent: str = "out_of_scope") -> Reply:
        key = intent if intent in OUT_OF_SCOPE else "out_of_scope"
        return Reply([self._say(f"out_of_scope.{key}", now)], "out_of_scope")

    def other_town(self, now: dt.datetime) -> Reply:
        """Another commune or body: we only answer for ours, and say where to look."""
        return Reply([self._say("other_town", now)], "out_of_scope")

    def english_note(self, outcome: str | None, now: dt.datetime) -> str:
        """One short English sentence added to the French answer for English writers."""
        family = (outcome or "clarify").split(":")[0]
        key = family if self.replies.has(f"english.{family}") else "clarify"
        return self._say(f"english.{key}", now)

    def possible_danger_note(self, now: dt.datetime) -> str:
        """The emergency line added to a normal answer when the danger detector is unsure."""
        return self._say("possible_danger", now, numbers=self.profile.town.emergency_numbers)

    def clarify(self, now: dt.datetime) -> Reply:
        return Reply([self._say("clarify", now)], None)

    # --- tickets --------------------------------------------------------------------------------
    def draft_ticket(self, intent: str | None, text: str, kind: str | None = None) -> TicketDraft:
        """Understand a report: which service, which kind (learned, see bot.kinds), what is missing."""
        service = service_for_intent(intent, self.profile)
        location = extract_location(text)
        if intent == "inform_location":
            return TicketDraft(service=None, kind="report", description="", location=location or text,
                               need_detail=True)
        if service is None and intent not in ("ticket_generic",):
            service = service_from_keywords(text, self.profile)
        kind = settle_kind(kind, service)
        vague = service is None or intent == "ticket_generic"
        draft = TicketDraft(service=service, kind=kind, description=text, location=location,
                            need_detail=vague)
        draft.need_location = not vague and needs_location(service, kind, text, self.profile)
        return draft

    def complete_detail(self, draft: TicketDraft, intent: str | None, text: str,
                        kind: str | None = None) -> TicketDraft:
        """The citizen described the problem after "quel est le problème ?"."""
        refined = self.draft_ticket(intent if intent and intent.startswith("ticket_") else None, text, kind)
        if refined.service is None:
            refined.service = service_from_keywords(text, self.profile)
        description = f"{draft.description} — {text}".strip(" —") if draft.description else text
        location = draft.location or refined.location
        kind = settle_kind(kind, refined.service, earlier=draft.kind if draft.description else None)
        result = TicketDraft(service=refined.service, kind=kind, description=description, location=location)
        result.need_location = location is None and needs_location(result.service, kind, description, self.profile)
        return result

    def ask_location(self, now: dt.datetime, vague: bool = False) -> Reply:
        """Where is it? Again, more precisely, after "devant chez moi" or "ici"."""
        return Reply([self._say("ask_location_precise" if vague else "ask_location", now)], "ask_location")

    def ask_detail(self, now: dt.datetime) -> Reply:
        return Reply([self._say("ask_detail", now)], "ask_detail")

    def understand_place(self, text: str | None):
        """The place of a report as the town's address file knows it (``bot.places``), or None."""
        if not text:
            return None
        try:
            from bot import places

            if not places.loaded(self.store):
                return None
            pin = GPS_PIN.search(text)
            if pin:
                return places.nearest(self.store, float(pin.group(1)), float(pin.group(2)))
            return places.match(self.store, text)
        except Exception as exc:  # noqa: BLE001 - a place not understood stays as the citizen's words
            logger.warning("place not understood: %s", type(exc).__name__)
            return None

    def create_ticket(self, draft: TicketDraft, conversation: Conversation, now: dt.datetime,
                      check_duplicate: bool = True) -> Reply:
        queue = draft.service or CM_QUEUE
        summary = draft.description or (draft.location or "")
        place = self.understand_place(draft.location or draft.description) if queue != CM_QUEUE else None
        if place is not None and check_duplicate and draft.kind == "report":
            duplicate = Followers(self.store, self.profile).duplicate_of(queue, place.lat, place.lon, conversation.id, now)
            if duplicate is not None:
                return self.follow_duplicate(duplicate[0], draft, conversation, now)
        ticket, created = self.store.create(NewTicket(
            kind=draft.kind, queue=queue, conversation_id=conversation.id, channel=conversation.channel,
            summary=summary[:2000], location=draft.location, citizen_name=conversation.citizen_name,
            source_message_id=conversation.message_id,
        ), now=now)
        if created and place is not None:
            ticket = self.store.set_place(ticket.id, place.label, place.kind, place.confidence, place.lat, place.lon)
        if created:
            events.emit("ticket_created", ticket=ticket)
        if queue == CM_QUEUE:
            head = self._say("ticket_created.unrouted", now, ref=ticket.reference)
        else:
            head = self._say(f"ticket_created.{draft.kind}", now, ref=ticket.reference,
                             service=self.profile.service(queue).name)
        tail = self._say("ticket_created.next_open" if self.staff_hours(now).is_open(now) else "ticket_created.next_closed",
                         now)
        outcome = f"ticket:{queue}" if queue != CM_QUEUE else "ticket:unrouted"
        notices = self._notices(now, service=queue) if queue != CM_QUEUE else []
        understood = [self._say("ticket_created.place", now, place=place.label)] if place is not None else []
        return Reply([f"{head} {tail}"] + understood + notices, outcome, ticket=ticket)

    def follow_duplicate(self, ticket: Ticket, draft: TicketDraft, conversation: Conversation,
                         now: dt.datetime) -> Reply:
        """« Déjà signalé »: the citizen follows the open ticket of the same problem; their words join it."""
        Followers(self.store).follow(ticket.id, conversation.id, conversation.channel, conversation.citizen_name)
        words = draft.description or draft.location or ""
        if draft.location and draft.location not in words:
            words = f"{words} — {draft.location}"
        self.store.add_message(conversation.id, conversation.channel, "citizen", f"[déjà signalé] {words}"[:2000],
                               ticket_id=ticket.id, author_name=conversation.citizen_name)
        text = self._say("ticket_created.duplicate", now, **self._ticket_words(ticket))
        return Reply([text], f"ticket:{ticket.queue}", ticket=ticket)

    def another_problem(self, conversation: Conversation, intent: str, now: dt.datetime) -> Reply | None:
        """"Non, c'est un autre problème" just after « déjà signalé »: a ticket of their own after all."""
        if intent != "deny":
            return None
        followers = Followers(self.store)
        follow = followers.latest_follow(conversation.id, dt.timedelta(minutes=30), now)
        if follow is None:
            return None
        followed = self.store.get(follow.ticket_id)
        followers.leave(follow.id)
        lines = [m.text for m in self.store.transcript(followed.id)
                 if m.conversation_id == conversation.id and m.text.startswith("[déjà signalé] ")]
        words = lines[-1].removeprefix("[déjà signalé] ") if lines else followed.summary
        draft = TicketDraft(service=followed.queue, kind="report", description=words, location=words)
        return self.create_ticket(draft, conversation, now, check_duplicate=False)

    def add_to_recent_ticket(self, conversation: Conversation, text: str, now: dt.datetime,
                             service: str | None = None, detail: bool = False,
                             within: dt.timedelta = dt.timedelta(minutes=30)) -> Reply | None:
        """A precision sent just after a ticket (a place, a detail): add it to that ticket.

        Without ``service`` any recent ticket qualifies (a place or a detail on its own); with it,
        only a ticket of the same service, so a second problem still gets its own ticket. A place
        becomes the ticket's location unless ``detail`` (then it is added to the summary).
        """
        recent = [t for t in self.store.for_conversation(conversation.id, limit=1)
                  if t.kind != HANDOFF and t.is_open and (service is None or t.queue == service)]
        if not recent:
            return None
        ticket = recent[0]
        naive_now = now.astimezone(dt.timezone.utc).replace(tzinfo=None)
        if not dt.timedelta(0) <= naive_now - ticket.created_at <= within:
            return None
        text = " ".join(text.split())
        if not detail and (service is None or extract_location(text)):
            self.store.update_location(ticket.id, text[:300])
        else:
            self.store.append_summary(ticket.id, text[:1000])
        return Reply([self._say("location_added", now, ref=ticket.reference)], f"ticket:{ticket.queue}", ticket=ticket)

    def opinion(self, conversation: Conversation, text: str, now: dt.datetime,
                intent: str | None = None) -> Reply:
        """An opinion on a decision of the town: a complaint ticket for the service concerned
        ("on fait remonter"); with no service concerned, the community manager takes it."""
        service = service_for_intent(intent, self.profile) or service_from_keywords(text, self.profile)
        if service is None:
            return self.handoff("complaint", conversation, text, now)
        draft = TicketDraft(service=service, kind=COMPLAINT, description=text)
        return self.create_ticket(draft, conversation, now)

    def tell_possible_danger(self, conversation: Conversation, text: str, now: dt.datetime) -> None:
        """The danger detector was unsure: the answer carries the emergency line, the CM is told."""
        events.emit("possible_danger", conversation_id=conversation.id, channel=conversation.channel,
                    text=(text or "")[:500], at=now)

    # --- status ---------------------------------------------------------------------------------
    def status(self, conversation: Conversation, text: str, now: dt.datetime) -> Reply:
        asked, tickets = self.store.citizen_lookup(conversation.id, text)
        if asked and not tickets:
            return Reply([self._say("status.not_found", now, ref=asked)], "status")
        if not tickets:
            return Reply([self._say("status.none", now)], "status")
        if len(tickets) == 1:
            return Reply([self._describe(tickets[0], now)], "status", ticket=tickets[0])
        lines = [self._say("status.list_intro", now)]
        for ticket in tickets:
            lines.append(self._say("status.list_item", now, **self._ticket_words(ticket)))
        return Reply(["\n".join(lines)], "status")

    def _ticket_words(self, ticket: Ticket) -> dict:
        service = self.profile.services.get(ticket.queue)
        return {
            "ref": ticket.reference,
            "kind": self.replies.render(f"status.kinds.{ticket.kind}"),
            "status": self.replies.render(f"status.labels.{ticket.status}"),
            "service": service.name if service else f"équipe {self.profile.cm_team}",
        }

    def _describe(self, ticket: Ticket, now: dt.datetime) -> str:
        updated = self.hours.local(ticket.updated_at).strftime("%d/%m/%Y")
        return self._say("status.one", now, updated=updated, **self._ticket_words(ticket))

    # --- hand-off -------------------------------------------------------------------------------
    def handoff(self, reason: str, conversation: Conversation, text: str, now: dt.datetime) -> Reply:
        if reason not in HANDOFF_REASONS:
            reason = "human_request"
        urgent = reason in URGENT_REASONS
        existing = self.store.open_handoff(conversation.id)
        ticket, created = (existing, False) if existing else self.store.create(NewTicket(
            kind=HANDOFF, queue=CM_QUEUE, conversation_id=conversation.id, channel=conversation.channel,
            summary=(text or "")[:2000] or reason, urgent=urgent, handoff_reason=reason,
            citizen_name=conversation.citizen_name, source_message_id=conversation.message_id,
            location=extract_location(text or ""),
        ), now=now)
        if created:
            events.emit("handoff_created", ticket=ticket)
        numbers = self.profile.town.emergency_numbers
        texts = [self._say(f"handoff.intro.{reason}", now, numbers=numbers)]
        is_open = self.staff_hours(now).is_open(now)
        if urgent:
            texts.append(self._say("handoff.urgent_open" if is_open else "handoff.urgent_closed", now,
                                   ref=ticket.reference))
        else:
            texts.append(self._say("handoff.when_open" if is_open else "handoff.when_closed", now,
                                   ref=ticket.reference))
        return Reply(texts, "handoff", ticket=ticket, pause=True)

    def danger_during_handoff(self, ticket: Ticket, level: str, reason: str | None, now: dt.datetime) -> str:
        """A message with danger while the team has the conversation: the emergency numbers at once;
        sure danger makes the hand-off urgent (the CM is told), unsure danger is told to the CM too."""
        if level == "urgent":
            marked = self.store.mark_urgent(ticket.id, now=now)
            if marked is not None:
                events.emit("handoff_became_urgent", ticket=marked)
        key = "suicide" if reason == "suicide" else "other"
        return self._say(f"danger_during_handoff.{key}", now, numbers=self.profile.town.emergency_numbers)

    def technical_problem(self, now: dt.datetime) -> str:
        return self._say("technical_problem", now)


@lru_cache(maxsize=4)
def _cached(database_url: str, profile_path: str, replies_path: str) -> Assistant:
    profile = load_profile(profile_path)
    replies = Replies.load(replies_path, profile)
    return Assistant(profile, TicketStore(database_url), replies, StaffHours.from_town(profile.town))


def get_assistant() -> Assistant:
    settings = get_settings()
    return _cached(settings.database_url, str(settings.profile_path), str(settings.replies_path))
