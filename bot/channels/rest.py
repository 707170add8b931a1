"""Our REST channel ("guichet"): Rasa's REST channel, hardened, plus the relay's pull endpoint.

``POST /webhooks/guichet/webhook`` with ``{"sender": "...", "message": "...", "message_id": "..."}``
answers with a JSON list of messages, like Rasa's REST channel, but:

- every citizen message is recorded (by the event broker, or here when it does not reach the
  assistant; in the spool file when the database is down) — nothing is lost;
- the citizen always gets an answer outside a hand-off: if the assistant produced none (action
  server down, error), a short "souci technique, votre message est bien conservé";
- bad input gets a clear French answer, never a 500: invalid JSON or UTF-8, missing or invalid
  fields, empty messages, control characters (removed), very long messages (cut at 4,000
  characters), very long sender ids (refused: 255 characters at most);
- Rasa's slash commands typed by a citizen (``/restart``, ``/session_start``, ``/greet{...}``) are
  plain text (the slash is removed): only the payloads of buttons the bot offers may pass
  (``domain.yml`` responses; none today). A ``/restart`` can no longer un-pause a hand-off;
- a flood from one conversation (``bot/flood.py``, default 20 messages a minute, burst 10) gets
  one polite slow-down notice; the extra messages are recorded but not sent to the assistant;
- ``message_id`` (optional, chosen by the client) makes a retry idempotent: the same message
  posted again (after a timeout) waits for / returns the first answer instead of being handled
  twice, and never opens a second ticket. With several Rasa servers (``GUICHET_REDIS_URL``) the
  answers and the "being handled" markers are in Redis (``bot.shared_state``): a retry that the
  proxy sends to another server gets the same answer; if the first server died half-way, the
  retry is handled again (the ticket's ``source_message_id`` keeps it to one ticket).

``GET /webhooks/guichet/outbox?sender=ID`` returns (once) the messages staff sent to that
conversation: replies from the CM or a service, status news. The local chat polls it.
"""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, Text

from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.core.channels.rest import RestInput
from sanic import Blueprint, response
from sanic.request import Request
from sqlalchemy.exc import SQLAlchemyError

from bot import db, relay, shared_state
from bot.flood import FloodGuard
from bot.integrations import reliability
from bot.integrations.reliability import message_id_for
from bot.settings import PROJECT_ROOT, get_settings
from bot.textnorm import clean_citizen_text, command_as_words
from bot.tickets import TicketStore

logger = logging.getLogger(__name__)
MAX_SENDER = 255  # the conversation id columns (ticket, message, Rasa's events) hold 255 characters
MAX_TEXT = 4000
MAX_METADATA = 10_000  # characters of JSON
RESULT_TTL = 600  # seconds an answer is kept for a retried message id
RESULT_CACHE = 20_000
RETRY_WAIT = 120  # seconds a retry waits for the first attempt's answer
INFLIGHT_TTL = 15  # seconds a "being handled" marker lives in Redis unless its server renews it


def allowed_payloads(domain_path: Path | None = None) -> frozenset[str]:
    """Payloads of the buttons the bot offers (responses in domain.yml): the only slash-messages passed on."""
    import yaml

    path = domain_path or PROJECT_ROOT / "domain.yml"
    try:
        domain = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return frozenset()
    payloads = set()
    for variants in (domain.get("responses") or {}).values():
        for variant in variants or []:
            for button in (variant or {}).get("buttons") or []:
                payload = str((button or {}).get("payload") or "")
                if payload.startswith("/"):
                    payloads.add(payload)
    return frozenset(payloads)


class BadRequest(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


# Channels whose gateways post here on their citizens' behalf (``input_channel`` in the body):
# tickets then carry that channel, so staff replies are delivered there.
GATEWAY_CHANNELS = frozenset({"telegram", "messenger", "instagram", "facebook_comment", "instagram_comment", "webchat"})


async def replay_answer(agent, sender: str, message_id: str) -> Optional[list]:
    """The answers already given to this message, read from the stored conversation, or None if the
    conversation does not hold it: a server that died after handling a message but before sending
    its answer must not make the next server handle it a second time."""
    tracker = await agent.tracker_store.retrieve(sender)
    if tracker is None:
        return None
    answers: Optional[list] = None
    for event in tracker.events:
        if event.type_name == "user":
            if answers is not None:
                break
            if getattr(event, "message_id", None) == message_id:
                answers = []
        elif answers is not None and event.type_name == "bot":
            item: dict = {"recipient_id": sender, "text": event.text}
            if (event.data or {}).get("buttons"):
                item["buttons"] = event.data["buttons"]
            answers.append(item)
    return answers


async def tag_outcomes(agent, sender: str, message_id: str, messages: list) -> None:
    """Give each text answer the assistant's outcome tag ("faq:piscine", "ticket:voirie"...), read
    from the turn's bot events: a gateway asking for it (metadata ``outcomes``) decides from it how
    to answer in public (``bot/channels/meta/comments.py``)."""
    tracker = await agent.tracker_store.retrieve(sender)
    if tracker is None:
        return
    tags: list = []
    for event in reversed(tracker.events):
        if event.type_name == "user" and getattr(event, "message_id", None) == message_id:
            break
        if event.type_name == "bot":
            tags.append(event.metadata or {})
    else:
        return
    tags.reverse()
    texts = [m for m in messages if m.get("text")]
    for message, tag in zip(texts, tags):
        message["outcome"] = tag.get("outcome")
        if tag.get("danger_note"):
            message["danger_note"] = True  # the emergency line added when danger is possible


def parse_body(raw: bytes) -> tuple[str, Any, Optional[dict], Any, Optional[str]]:
    """(sender, message, metadata, client message id, gateway channel) from a request body.

    Raises BadRequest with the answer's key."""
    try:
        payload = json.loads((raw or b"").decode("utf-8", errors="replace"))
    except ValueError:
        raise BadRequest("bad_request") from None
    if not isinstance(payload, dict):
        raise BadRequest("bad_request")
    sender = payload.get("sender")
    if isinstance(sender, bool) or not isinstance(sender, (str, int)):
        raise BadRequest("bad_sender")
    sender = str(sender).strip()
    if not sender or len(sender) > MAX_SENDER or clean_citizen_text(sender, MAX_SENDER + 1) != sender:
        raise BadRequest("bad_sender")
    message = payload.get("message")
    if message is None:
        message = ""
    elif isinstance(message, (int, float)) and not isinstance(message, bool):
        message = str(message)
    elif not isinstance(message, str):
        raise BadRequest("bad_message")
    metadata = payload.get("metadata")
    if not isinstance(metadata, dict):
        metadata = None
    elif len(json.dumps(metadata, default=str)) > MAX_METADATA:
        metadata = None
    client_id = payload.get("message_id")
    if client_id is None and metadata:
        client_id = metadata.get("message_id")
    gateway = payload.get("input_channel")
    return sender, message, metadata, client_id, gateway if gateway in GATEWAY_CHANNELS else None


class PlainRestInput(RestInput):
    """Rasa's plain REST channel (``/webhooks/rest/webhook``, kept for benchmarks and simple clients),
    with one safety fix: a citizen's "/restart" is the text "restart", never Rasa's intent."""

    _allowed: Optional[frozenset] = None

    @classmethod
    def name(cls) -> Text:
        return "rest"

    def _extract_message(self, req: Request) -> Optional[Text]:
        text = super()._extract_message(req)
        if not isinstance(text, str):
            return text
        if PlainRestInput._allowed is None:
            PlainRestInput._allowed = allowed_payloads()
        return command_as_words(text, PlainRestInput._allowed) or "bonjour"


class GuichetRestInput(RestInput):
    @classmethod
    def name(cls) -> Text:
        return "guichet"

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        blueprint = Blueprint(f"custom_webhook_{type(self).__name__}", __name__)
        store = TicketStore(get_settings().database_url)
        texts = reliability.channel_texts()
        guard = FloodGuard.from_env(name="rest")
        allowed = allowed_payloads()
        inflight: dict[str, asyncio.Future] = {}
        results: "collections.OrderedDict[str, tuple[float, list]]" = collections.OrderedDict()
        channel = self.name()
        shared = shared_state.shared()
        server_id = f"{uuid.uuid4().hex[:12]}"

        async def answered_elsewhere(message_id: str) -> Optional[list]:
            """Another server handles this message: its answer, once there (None if that server gave up)."""
            deadline = time.monotonic() + RETRY_WAIT
            while time.monotonic() < deadline:
                cached = await asyncio.to_thread(shared.recall, f"answer:{message_id}")
                if cached is not None:
                    return cached
                if await asyncio.to_thread(shared.holder, f"inflight:{message_id}") is None:
                    return await asyncio.to_thread(shared.recall, f"answer:{message_id}")
                await asyncio.sleep(0.2)
            return [say("", "channel.in_progress")]

        async def answer_or_claim(sender: str, message_id: str, agent=None) -> Optional[list]:
            """The answer another server gave (or is giving) this message, or None once we hold it."""
            cached = await asyncio.to_thread(shared.recall, f"answer:{message_id}")
            if cached is not None:
                return cached
            while not await asyncio.to_thread(shared.claim, f"inflight:{message_id}", server_id, INFLIGHT_TTL):
                elsewhere = await answered_elsewhere(message_id)
                if elsewhere is not None:
                    for item in elsewhere:
                        item["recipient_id"] = item.get("recipient_id") or sender
                    return elsewhere
            # Ours now. A server that handled it may have died before answering (its claim lapsed,
            # the retry came later): if the stored conversation holds the message, its answer stands.
            if agent is not None:
                replayed = await replay_answer(agent, sender, message_id)
                if replayed is not None:
                    await asyncio.to_thread(shared.remember, f"answer:{message_id}", replayed, RESULT_TTL)
                    await asyncio.to_thread(shared.release, f"inflight:{message_id}")
                    return replayed
            return None

        async def keep_claim(message_id: str) -> None:
            while True:
                await asyncio.sleep(INFLIGHT_TTL / 3)
                await asyncio.to_thread(shared.redis.pexpire, f"{shared_state.PREFIX}inflight:{message_id}",
                                        INFLIGHT_TTL * 1000)

        def say(sender: str, key: str) -> dict:
            return {"recipient_id": sender, "text": texts.render(key)}

        def remember(key: str, messages: list) -> None:
            results[key] = (time.monotonic(), messages)
            results.move_to_end(key)
            while len(results) > RESULT_CACHE or (results and time.monotonic() - next(iter(results.values()))[0] > RESULT_TTL):
                results.popitem(last=False)

        async def record(sender: str, text: str, message_id: str, metadata: Optional[dict],
                         channel: str = channel) -> str:
            name = clean_citizen_text(str((metadata or {}).get("citizen_name") or ""), 200) or None
            return await asyncio.to_thread(reliability.record_or_spool, store, sender, channel, text, message_id,
                                           None, name)

        async def flush_spool() -> None:
            if reliability.has_spooled():
                try:
                    await asyncio.to_thread(reliability.flush_spool, store)
                except Exception as exc:  # noqa: BLE001 - tried again at the next message
                    logger.error("could not flush the message spool: %s", type(exc).__name__)

        async def danger_during_handoff(agent, ticket, sender: str, text: str, channel: str) -> Optional[str]:
            """The bot is silent during a hand-off, but a person in danger gets the emergency numbers
            at once, whatever else is going on: the message is read by the NLU (danger head)."""
            if agent is None:
                return None
            try:
                parsed = await agent.parse_message(text)
                danger = (parsed.get("signals") or {}).get("danger") or {}
                level = danger.get("level") if isinstance(danger, dict) else None
                if level not in ("urgent", "possible"):
                    return None
                from bot.assistant import Conversation, get_assistant

                assistant = get_assistant()
                now = dt.datetime.now(dt.timezone.utc)
                if level == "possible":
                    await asyncio.to_thread(assistant.tell_possible_danger, Conversation(sender, channel), text, now)
                return await asyncio.to_thread(assistant.danger_during_handoff, ticket, level, danger.get("reason"), now)
            except Exception as exc:  # noqa: BLE001 - the message is kept on the ticket whatever happens
                logger.error("could not check a hand-off message of %s for danger: %s", sender, type(exc).__name__)
                return None

        async def handle(sender: str, text: str, message_id: str, metadata: Optional[dict],
                         channel: str = channel, agent=None) -> list:
            decision = guard.check(sender)
            if not decision.allowed:
                await record(sender, text, message_id, metadata, channel)
                return [say(sender, "channel.slow_down")] if decision.notify else []
            try:
                handoff_before = await asyncio.to_thread(db.retrying, store.open_handoff, sender)
            except SQLAlchemyError:  # the database is down: Rasa could not load the conversation either
                logger.warning("database unreachable: message of %s kept, technical-problem answer", sender)
                await record(sender, text, message_id, metadata, channel)
                return [{"recipient_id": sender, "text": texts.technical_problem()}]
            await flush_spool()
            collector = CollectingOutputChannel()
            task = asyncio.ensure_future(on_new_message(UserMessage(
                text, collector, sender, input_channel=channel, message_id=message_id, metadata=metadata)))
            failed = False
            try:
                await asyncio.shield(task)  # a client hanging up does not stop the message half-way
            except Exception as exc:  # noqa: BLE001 - answered below
                # Not logger.exception: error texts may carry the citizen's message (privacy).
                logger.error("the assistant failed on a message of %s: %s", sender, type(exc).__name__)
                logger.debug("assistant failure traceback", exc_info=True)
                failed = True
            messages = list(collector.messages)
            if (metadata or {}).get("outcomes") and agent is not None and not failed:
                try:
                    await tag_outcomes(agent, sender, message_id, messages)
                except Exception as exc:  # noqa: BLE001 - the answers matter more than their tags
                    logger.warning("could not read the outcomes of %s: %s", sender, type(exc).__name__)
            answered = any(m.get("text") or m.get("buttons") or m.get("image") or m.get("custom") for m in messages)
            if failed or not answered:
                # Whatever happened inside, the message must be in the transcript (recorded once).
                await record(sender, text, message_id, metadata, channel)
            if not answered and handoff_before is not None and not failed:
                alert = await danger_during_handoff(agent, handoff_before, sender, text, channel)
                if alert:
                    messages.append({"recipient_id": sender, "text": alert})
                    try:
                        from bot.transcript import record_bot_message

                        await asyncio.to_thread(record_bot_message, store, sender, channel, alert, message_id)
                    except Exception:  # noqa: BLE001 - the answer matters more than its copy
                        logger.warning("could not record the emergency answer of %s", sender)
            if not answered and handoff_before is None:
                apology = texts.technical_problem()
                messages.append({"recipient_id": sender, "text": apology})
                try:
                    from bot.transcript import record_bot_message

                    await asyncio.to_thread(record_bot_message, store, sender, channel, apology, message_id)
                except Exception:  # noqa: BLE001 - the answer matters more than its copy
                    logger.warning("could not record the technical-problem answer of %s", sender)
            return messages

        @blueprint.route("/", methods=["GET"])
        async def health(request: Request) -> response.HTTPResponse:
            return response.json({"status": "ok"})

        @blueprint.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> response.HTTPResponse:
            try:
                sender, message, metadata, client_id, gateway = parse_body(request.body)
            except BadRequest as error:
                return response.json([{"recipient_id": None, "text": texts.render(f"channel.{error.key}")}], status=400)
            text = command_as_words(clean_citizen_text(message, MAX_TEXT), allowed)
            if not text:
                return response.json([say(sender, "channel.empty_message")])
            message_id = message_id_for(sender, client_id)
            if message_id is None:
                message_id = uuid.uuid4().hex
            elif message_id in results:  # a retry of a message already answered: the same answer
                return response.json(results[message_id][1])
            elif message_id in inflight:  # a retry while the first attempt is still running
                try:
                    return response.json(await asyncio.wait_for(asyncio.shield(inflight[message_id]), RETRY_WAIT))
                except (Exception, asyncio.CancelledError):  # noqa: BLE001 - still running: nothing is lost
                    return response.json([say(sender, "channel.in_progress")])
            renewing = None
            if shared is not None and client_id is not None:
                try:
                    earlier = await answer_or_claim(sender, message_id, getattr(request.app.ctx, "agent", None))
                except Exception as exc:  # noqa: BLE001 - Redis down: handled here, as on one server
                    logger.warning("shared state unreachable (%s): message of %s handled without it",
                                   type(exc).__name__, sender)
                    earlier = None
                else:
                    if earlier is None:
                        renewing = asyncio.ensure_future(keep_claim(message_id))
                if earlier is not None:
                    return response.json(earlier)
            agent = getattr(request.app.ctx, "agent", None)

            async def answer() -> list:
                """The whole handling of the message, as a task of its own: a client or proxy that
                hangs up (or a server timeout) does not stop it, and the claim shared with the other
                servers is released only once the answer is known (else a retry elsewhere would
                handle the message a second time while this one is still at it)."""
                try:
                    try:
                        return await handle(sender, text, message_id, metadata, gateway or channel, agent=agent)
                    except Exception as exc:  # noqa: BLE001 - never a 500: the message is kept and the citizen told
                        logger.error("unexpected error on a message of %s: %s", sender, type(exc).__name__)
                        logger.debug("channel failure traceback", exc_info=True)
                        await record(sender, text, message_id, metadata, gateway or channel)
                        return [{"recipient_id": sender, "text": texts.technical_problem()}]
                finally:
                    inflight.pop(message_id, None)
                    if renewing is not None:
                        renewing.cancel()

            async def share(finished: "asyncio.Task") -> None:
                try:
                    if not finished.cancelled() and finished.exception() is None:
                        await asyncio.to_thread(shared.remember, f"answer:{message_id}", finished.result(),
                                                RESULT_TTL)
                    await asyncio.to_thread(shared.release, f"inflight:{message_id}")
                except Exception as exc:  # noqa: BLE001 - the marker expires by itself
                    logger.warning("could not share the answer of %s: %s", sender, type(exc).__name__)

            job = asyncio.ensure_future(answer())
            inflight[message_id] = job
            if renewing is not None:
                job.add_done_callback(lambda finished: asyncio.ensure_future(share(finished)))
            messages = await asyncio.shield(job)
            if client_id is not None:
                remember(message_id, messages)
            return response.json(messages)

        @blueprint.route("/outbox", methods=["GET"])
        async def outbox(request: Request) -> response.HTTPResponse:
            sender = (request.args.get("sender") or "").strip()
            if not sender or len(sender) > MAX_SENDER:
                return response.json({"error": "paramètre « sender » manquant ou invalide"}, status=400)
            items = await asyncio.to_thread(relay.collect_items, store, sender)
            return response.json([{"recipient_id": sender, "text": item["text"],
                                   **({"buttons": item["buttons"]} if item["buttons"] else {})} for item in items])

        return blueprint
