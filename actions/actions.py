"""Rasa custom actions: thin adapters between Rasa's tracker and the domain in bot/.

Each action reads what Rasa understood (intent, text, slots), calls bot.assistant, utters the
texts (tagged with their outcome in the message metadata) and returns the Rasa events.
Blocking database work runs in a worker thread so the action server's event loop stays free.
"""
from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
import datetime as dt
from typing import Any, Dict, List, Optional, Text

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import (
    ActionExecuted,
    ActiveLoop,
    ConversationPaused,
    EventType,
    FollowupAction,
    SessionStarted,
    SlotSet,
)
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from bot import notify
from bot.assistant import Assistant, Conversation, Reply, TicketDraft, get_assistant
from bot.settings import get_settings
from bot.location import is_vague_place
from bot.safety import danger_reason
from bot.textnorm import clean_citizen_text

notify.install()  # new hand-offs reach the staff (GUICHET_NOTIFY_URL) from the action server

TICKET_SLOTS = ("ticket_service", "ticket_kind", "ticket_description", "ticket_location",
                "ticket_detail", "ticket_need_location", "ticket_need_detail")
MISUNDERSTOOD_INTENTS = ("nlu_fallback", "gibberish")
# A report of another service read with less confidence than this, a few minutes after a ticket,
# is taken as more about that ticket.
FOLLOW_UP_CONFIDENCE = 0.6
FOLLOW_UP_WINDOW = dt.timedelta(minutes=10)
HANDOFF_REASON_BY_INTENT = {
    "handoff_human": "human_request",
    "handoff_insult": "insult",
    "handoff_threat": "threat",
    "handoff_press": "press",
    "handoff_legal": "legal",
    "handoff_person_complaint": "person_complaint",
    "handoff_personal_data": "personal_data",
    "urgence_violence": "distress_violence",
    "urgence_danger": "distress_danger",
    "urgence_detresse": "distress_suicide",
    "complaint_general": "complaint",
}
REASON_BY_DANGER = {"violence": "distress_violence", "danger": "distress_danger", "suicide": "distress_suicide"}


# --- helpers ----------------------------------------------------------------------------------
def now_for(tracker: Tracker) -> dt.datetime:
    """The current time; the evaluation harness may pin it through message metadata."""
    if get_settings().trust_client_clock:
        pinned = (tracker.latest_message.get("metadata") or {}).get("now")
        if pinned:
            moment = dt.datetime.fromisoformat(pinned)
            if moment.tzinfo is None:
                import pytz

                moment = pytz.timezone("Europe/Paris").localize(moment)
            return moment
    return dt.datetime.now(dt.timezone.utc)


def conversation_for(tracker: Tracker) -> Conversation:
    metadata = tracker.latest_message.get("metadata") or {}
    name = clean_citizen_text(str(metadata.get("citizen_name") or ""), 200) if isinstance(metadata, dict) else ""
    return Conversation(
        id=tracker.sender_id,
        channel=tracker.get_latest_input_channel() or "rest",
        citizen_name=name or None,
        message_id=tracker.latest_message.get("message_id"),
    )


def latest_text(tracker: Tracker) -> str:
    return clean_citizen_text(tracker.latest_message.get("text") or "")


def latest_intent(tracker: Tracker) -> Optional[str]:
    return (tracker.latest_message.get("intent") or {}).get("name")


def intent_confidence(tracker: Tracker) -> float:
    return float((tracker.latest_message.get("intent") or {}).get("confidence") or 0.0)


def say(dispatcher: CollectingDispatcher, reply: Reply) -> None:
    for text in reply.texts:
        dispatcher.utter_message(text=text, outcome=reply.outcome)


def signals_of(tracker: Tracker) -> Dict[str, Any]:
    """What the signal heads of the NLU pipeline found (bot/integrations/signal_classifier.py)."""
    signals = tracker.latest_message.get("signals")
    return signals if isinstance(signals, dict) else {}


def learned_kind(tracker: Tracker) -> Optional[str]:
    return signals_of(tracker).get("kind")


def urgent_reason(tracker: Tracker) -> Optional[str]:
    """The urgent hand-off reason for the latest message: the learned detector, else the lexical net."""
    danger = signals_of(tracker).get("danger")
    if isinstance(danger, dict):
        return REASON_BY_DANGER.get(danger.get("reason")) if danger.get("level") == "urgent" else None
    return danger_reason(latest_text(tracker))


def asked_precisely(tracker: Tracker) -> bool:
    """Whether the assistant's last question, before this message, already asked for the exact address."""
    precise = get_assistant().replies.render("ask_location_precise")
    seen_user = False
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            if seen_user:
                return False
            seen_user = True
        elif event.get("event") == "bot" and seen_user:
            return (event.get("text") or "").startswith(precise)
    return False


def best_ticket_service(tracker: Tracker) -> Optional[str]:
    """The most likely ticket service in the intent ranking (for messages that are not reports)."""
    for candidate in tracker.latest_message.get("intent_ranking") or []:
        name = candidate.get("name") or ""
        if name.startswith("ticket_") and name != "ticket_generic" and name != "ticket_status":
            return name
    return None


def reset_ticket_slots() -> List[EventType]:
    return [SlotSet(name, None) for name in TICKET_SLOTS]


def draft_slots(draft: TicketDraft) -> Dict[str, Any]:
    return {
        "ticket_service": draft.service,
        "ticket_kind": draft.kind,
        "ticket_description": draft.description,
        "ticket_location": draft.location,
        "ticket_need_location": draft.need_location,
        "ticket_need_detail": draft.need_detail,
    }


def draft_from_slots(tracker: Tracker) -> TicketDraft:
    return TicketDraft(
        service=tracker.get_slot("ticket_service"),
        kind=tracker.get_slot("ticket_kind") or "report",
        description=tracker.get_slot("ticket_description") or "",
        location=tracker.get_slot("ticket_location"),
    )


async def off_loop(function, *args):
    return await asyncio.to_thread(function, *args)


class GuichetAction(Action, ABC):
    """Base class: one `handle` per action, with the assistant, the time and the conversation.

    Actions with ``safety_net`` first check the message for danger to people: then the citizen
    gets the emergency numbers and an urgent hand-off, whatever the classifier thought.
    """

    safety_net = False
    english_key: Optional[str] = None  # the English line for replies without an outcome

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: DomainDict) -> List[EventType]:
        assistant = get_assistant()
        now = now_for(tracker)
        if self.safety_net:
            reason = urgent_reason(tracker)
            if reason:
                events = await off_loop(hand_off, assistant, dispatcher, tracker, reason, now)
                self.finish_replies(assistant, dispatcher, tracker, now)
                return events
        events = await off_loop(self.handle, assistant, dispatcher, tracker, now)
        self.finish_replies(assistant, dispatcher, tracker, now)
        return events

    def finish_replies(self, assistant: Assistant, dispatcher: CollectingDispatcher, tracker: Tracker,
                       now: dt.datetime) -> None:
        """What every answer gets: the emergency line when danger is possible, a line in English."""
        if not dispatcher.messages:
            return
        last = dispatcher.messages[-1]
        outcome = last.get("outcome")
        signals = signals_of(tracker)
        danger = signals.get("danger") if isinstance(signals.get("danger"), dict) else {}
        if danger.get("level") == "possible" and outcome != "handoff":
            dispatcher.utter_message(text=assistant.possible_danger_note(now), outcome=outcome, danger_note=True)
            assistant.tell_possible_danger(conversation_for(tracker), latest_text(tracker), now)
        if signals.get("language") == "en":
            note = assistant.english_note(outcome or self.english_key, now)
            last = dispatcher.messages[-1]
            last["text"] = f"{last.get('text') or ''} {note}".strip()

    @abstractmethod
    def handle(self, assistant: Assistant, dispatcher: CollectingDispatcher, tracker: Tracker,
               now: dt.datetime) -> List[EventType]:
        """Do the work (in a worker thread) and return the Rasa events."""


# --- session ----------------------------------------------------------------------------------
class ActionSessionStart(GuichetAction):
    """New session: stay silent if the conversation is still with the community manager."""

    def name(self) -> Text:
        return "action_session_start"

    def handle(self, assistant, dispatcher, tracker, now):
        events: List[EventType] = [SessionStarted(), ActionExecuted("action_listen")]
        if assistant.store.open_handoff(tracker.sender_id) is not None:
            events.append(ConversationPaused())
        return events


# --- plain answers ----------------------------------------------------------------------------
class ActionSmalltalk(GuichetAction):
    safety_net = True

    def name(self) -> Text:
        return "action_smalltalk"

    def handle(self, assistant, dispatcher, tracker, now):
        intent = latest_intent(tracker) or "greet"
        # "oui" / "non" / "merci" just after the satisfaction question answers it.
        conversation = conversation_for(tracker)
        reply = (assistant.satisfaction_answer(conversation, intent, latest_text(tracker), now)
                 # "non, c'est un autre problème" just after « déjà signalé »: a ticket of their own
                 or assistant.another_problem(conversation, intent, now))
        say(dispatcher, reply or assistant.smalltalk(intent, now))
        return [ActiveLoop(None)] + reset_ticket_slots() if tracker.active_loop_name else []


class ActionAnswerFaq(GuichetAction):
    safety_net = True

    def name(self) -> Text:
        return "action_answer_faq"

    def handle(self, assistant, dispatcher, tracker, now):
        intent = latest_intent(tracker) or ""
        topic = intent.removeprefix("faq_") if intent.startswith("faq_") else tracker.get_slot("last_faq_topic")
        if not topic:  # "et le samedi ?" with no earlier answer: ask what it is about
            say(dispatcher, assistant.clarify(now))
            return []
        say(dispatcher, assistant.faq(topic, now))
        return [SlotSet("last_faq_topic", topic)]


class ActionDecline(GuichetAction):
    def name(self) -> Text:
        return "action_decline"

    def handle(self, assistant, dispatcher, tracker, now):
        say(dispatcher, assistant.decline(now))
        return [ActiveLoop(None)] + reset_ticket_slots() if tracker.active_loop_name else []


class ActionOutOfScope(GuichetAction):
    safety_net = True

    def name(self) -> Text:
        return "action_out_of_scope"

    def handle(self, assistant, dispatcher, tracker, now):
        say(dispatcher, assistant.out_of_scope(now, latest_intent(tracker) or "out_of_scope"))
        return []


class ActionOtherTown(GuichetAction):
    """A question about another commune or body: we only answer for ours."""
    safety_net = True

    def name(self) -> Text:
        return "action_other_town"

    def handle(self, assistant, dispatcher, tracker, now):
        say(dispatcher, assistant.other_town(now))
        return [ActiveLoop(None)] + reset_ticket_slots() if tracker.active_loop_name else []


class ActionCouncilOpinion(GuichetAction):
    """An opinion on a decision of the town: acknowledged and passed on to the service concerned
    as a complaint ticket, or to the community manager when no service is concerned."""
    safety_net = True

    def name(self) -> Text:
        return "action_council_opinion"

    def handle(self, assistant, dispatcher, tracker, now):
        reply = assistant.opinion(conversation_for(tracker), latest_text(tracker), now,
                                  intent=best_ticket_service(tracker))
        say(dispatcher, reply)
        events: List[EventType] = [ActiveLoop(None)] + reset_ticket_slots() if tracker.active_loop_name else []
        return events + ([ConversationPaused()] if reply.pause else [])


class ActionTicketStatus(GuichetAction):
    def name(self) -> Text:
        return "action_ticket_status"

    def handle(self, assistant, dispatcher, tracker, now):
        say(dispatcher, assistant.status(conversation_for(tracker), latest_text(tracker), now))
        return [ActiveLoop(None)] + reset_ticket_slots() if tracker.active_loop_name else []


# --- hand-off ---------------------------------------------------------------------------------
def hand_off(assistant: Assistant, dispatcher, tracker: Tracker, reason: str, now) -> List[EventType]:
    reply = assistant.handoff(reason, conversation_for(tracker), latest_text(tracker), now)
    say(dispatcher, reply)
    return [ActiveLoop(None)] + reset_ticket_slots() + [ConversationPaused()]


class ActionHandoff(GuichetAction):
    def name(self) -> Text:
        return "action_handoff"

    def handle(self, assistant, dispatcher, tracker, now):
        reason = HANDOFF_REASON_BY_INTENT.get(latest_intent(tracker) or "", "human_request")
        return hand_off(assistant, dispatcher, tracker, reason, now)


def misunderstood_in_a_row(tracker: Tracker) -> int:
    """How many of the latest citizen messages (this one included) were not understood."""
    count = 0
    for event in reversed(tracker.events):
        if event.get("event") == "session_started":
            break
        if event.get("event") != "user":
            continue
        intent = ((event.get("parse_data") or {}).get("intent") or {}).get("name")
        if intent not in MISUNDERSTOOD_INTENTS:
            break
        count += 1
    return count


class ActionMisunderstood(GuichetAction):
    """First misunderstanding: ask to rephrase. Second in a row: a person takes over."""
    safety_net = True
    english_key = "clarify"

    def name(self) -> Text:
        return "action_misunderstood"

    def handle(self, assistant, dispatcher, tracker, now):
        if misunderstood_in_a_row(tracker) >= 2:
            return hand_off(assistant, dispatcher, tracker, "misunderstood", now)
        say(dispatcher, assistant.clarify(now))
        return [ActiveLoop(None)] + reset_ticket_slots() if tracker.active_loop_name else []


# --- tickets ----------------------------------------------------------------------------------
class ActionStartTicket(GuichetAction):
    """Understand the report (service, kind, place) before the form asks what is missing."""
    safety_net = True

    def name(self) -> Text:
        return "action_start_ticket"

    def handle(self, assistant, dispatcher, tracker, now):
        draft = assistant.draft_ticket(latest_intent(tracker), latest_text(tracker), kind=learned_kind(tracker))
        if draft.service:
            # More about the ticket just made (same service, or a hesitant reading of another one
            # a few minutes later: "c'est devant l'école" after a report): no second ticket.
            unsure = intent_confidence(tracker) < FOLLOW_UP_CONFIDENCE
            follow_up = assistant.add_to_recent_ticket(conversation_for(tracker), latest_text(tracker), now,
                                                       service=draft.service) or (
                unsure and assistant.add_to_recent_ticket(conversation_for(tracker), latest_text(tracker), now,
                                                          detail=True, within=FOLLOW_UP_WINDOW)) or None
            if follow_up is not None:
                say(dispatcher, follow_up)
                return [FollowupAction("action_listen")]
        return [SlotSet("ticket_detail", None if draft.need_detail else draft.description)] + [
            SlotSet(name, value) for name, value in draft_slots(draft).items()
        ]


class ActionAddLocation(GuichetAction):
    """A place on its own: complete the ticket just created, or start one and ask what happened."""
    safety_net = True

    def name(self) -> Text:
        return "action_add_location"

    def handle(self, assistant, dispatcher, tracker, now):
        text = latest_text(tracker)
        reply = assistant.add_to_recent_ticket(conversation_for(tracker), text, now)
        if reply is not None:
            say(dispatcher, reply)
            return []
        if is_vague_place(text):  # "devant chez moi" on its own: nothing to locate yet
            say(dispatcher, assistant.clarify(now))
            return []
        draft = assistant.draft_ticket("inform_location", text)
        say(dispatcher, assistant.ask_detail(now))
        return [SlotSet(name, value) for name, value in draft_slots(draft).items()] + [
            SlotSet("ticket_detail", None), ActiveLoop("ticket_form"), SlotSet("requested_slot", "ticket_detail"),
        ]


class ActionAddDetail(GuichetAction):
    """A detail on its own ("il est très profond"): added to the ticket just created."""
    safety_net = True

    def name(self) -> Text:
        return "action_add_detail"

    def handle(self, assistant, dispatcher, tracker, now):
        conversation, text = conversation_for(tracker), latest_text(tracker)
        reply = assistant.add_to_recent_ticket(conversation, text, now, detail=True)
        if reply is not None:
            say(dispatcher, reply)
            return []
        intent = best_ticket_service(tracker)  # no ticket yet: the detail is the report itself
        if intent is None:
            say(dispatcher, assistant.clarify(now))
            return []
        draft = assistant.draft_ticket(intent, text, kind=learned_kind(tracker))
        if draft.need_location:
            say(dispatcher, assistant.ask_location(now))
            return [SlotSet(name, value) for name, value in draft_slots(draft).items()] + [
                SlotSet("ticket_detail", text), ActiveLoop("ticket_form"), SlotSet("requested_slot", "ticket_location"),
            ]
        say(dispatcher, assistant.create_ticket(draft, conversation, now))
        return reset_ticket_slots()


class ValidateTicketForm(FormValidationAction):
    def name(self) -> Text:
        return "validate_ticket_form"

    async def required_slots(self, domain_slots, dispatcher, tracker, domain) -> List[Text]:
        needed = []
        if tracker.get_slot("ticket_need_detail"):
            needed.append("ticket_detail")
        if tracker.get_slot("ticket_need_location"):
            needed.append("ticket_location")
        return needed

    async def validate_ticket_detail(self, value, dispatcher, tracker, domain) -> Dict[Text, Any]:
        if not tracker.get_slot("ticket_need_detail"):
            return {"ticket_detail": value}
        text = clean_citizen_text(str(value or ""))
        if not text:
            return {"ticket_detail": None}
        assistant = get_assistant()
        draft = await off_loop(assistant.complete_detail, draft_from_slots(tracker), latest_intent(tracker), text,
                               learned_kind(tracker))
        slots = draft_slots(draft)
        slots.update(ticket_detail=text, ticket_need_detail=False)
        return slots

    async def validate_ticket_location(self, value, dispatcher, tracker, domain) -> Dict[Text, Any]:
        text = clean_citizen_text(str(value or ""))
        if not tracker.get_slot("ticket_need_location"):
            return {"ticket_location": tracker.get_slot("ticket_location")}
        if is_vague_place(text) and not asked_precisely(tracker):  # ask once more for the address
            return {"ticket_location": None}
        return {"ticket_location": text[:300] or None}


class ActionAskTicketLocation(GuichetAction):
    english_key = "ask_location"

    def name(self) -> Text:
        return "action_ask_ticket_location"

    def handle(self, assistant, dispatcher, tracker, now):
        vague = tracker.get_slot("requested_slot") == "ticket_location" and is_vague_place(latest_text(tracker))
        say(dispatcher, assistant.ask_location(now, vague=vague))
        return []


class ActionAskTicketDetail(GuichetAction):
    english_key = "ask_detail"

    def name(self) -> Text:
        return "action_ask_ticket_detail"

    def handle(self, assistant, dispatcher, tracker, now):
        say(dispatcher, assistant.ask_detail(now))
        return []


class ActionCreateTicket(GuichetAction):
    def name(self) -> Text:
        return "action_create_ticket"

    def handle(self, assistant, dispatcher, tracker, now):
        draft = draft_from_slots(tracker)
        if not draft.description:
            draft.description = tracker.get_slot("ticket_detail") or latest_text(tracker)
        say(dispatcher, assistant.create_ticket(draft, conversation_for(tracker), now))
        return reset_ticket_slots()
