"""A fake Meta Graph API on loopback, for the tests of the Messenger / Instagram gateway.

``FakeGraph`` answers what the gateway calls (the Send API ``/me/messages``, public replies
``/{comment-id}/comments`` and ``/{comment-id}/replies``) with Meta's shapes and Meta's errors, and
records every call in ``calls``. It also builds webhook payloads the way Meta sends them and
delivers them signed (``X-Hub-Signature-256``) to the gateway.

The Meta rules it enforces, so that tests prove the gateway follows them:

- every call carries ``access_token`` = the page token (query, body or ``Authorization: Bearer``),
  otherwise code 190;
- texts: 2,000 characters on Messenger, 1,000 UTF-8 *bytes* on Instagram (what Meta's Instagram
  Send API documents); at most 13 quick replies, titles of at most 20 characters;
- the messaging window, per recipient, from the latest ``timestamp`` of the message and postback
  events built by this fake: ``RESPONSE`` / ``UPDATE`` (or no messaging type) within 24 h,
  ``MESSAGE_TAG`` + ``HUMAN_AGENT`` within 7 days, else the "window" error; a recipient never seen
  gets code 100 / 2018001. Only the HUMAN_AGENT tag is accepted (stricter than Meta, which also
  takes a few business tags on Messenger that a town's front desk must not use);
- private replies (``recipient.comment_id``): one per comment, within 7 days of its created time;
  they answer the commenter's page-scoped id (``psid_for_commenter[from_id]``, default
  ``"psid-" + from_id``) but open no window: only a message from the person does.

``clock`` (default ``time.time``) is the fake's "now", for tests that move time.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import requests

DAY = 24 * 3600
TEXT_LIMITS = {"messenger": 2000, "instagram": 1000}  # characters on Messenger, UTF-8 bytes on Instagram
ERRORS = {  # kind -> (HTTP status, Meta's error object without type / fbtrace_id)
    "rate_limit": (400, {"message": "(#4) Application request limit reached", "code": 4, "is_transient": True}),
    "token": (400, {"message": "Error validating access token: Session has expired on Tuesday, 01-Jul-25 "
                               "10:00:00 PDT. The current time is Tuesday, 01-Jul-25 11:00:00 PDT.",
                    "code": 190, "error_subcode": 463}),
    "window": (400, {"message": "(#10) This message is sent outside of allowed window.",
                     "code": 10, "error_subcode": 2018278}),
    "unreachable": (400, {"message": "This person isn't available right now.", "code": 551,
                          "error_subcode": 1545041}),
    "temporary": (500, {"message": "An unexpected error has occurred. Please retry your request later.",
                        "code": 2, "is_transient": True}),
    "permission": (403, {"message": "(#200) Requires pages_messaging permission to manage the object",
                         "code": 200}),
    "unknown_user": (400, {"message": "(#100) No matching user found", "code": 100, "error_subcode": 2018001}),
    "bad_token": (400, {"message": "Invalid OAuth access token - Cannot parse access token", "code": 190}),
    "private_reply_sent": (400, {"message": "(#10) A private reply has already been sent to this comment.",
                                 "code": 10, "error_subcode": 2018292}),
}
SENDER_ACTIONS = {"typing_on", "typing_off", "mark_seen"}
VERSION = re.compile(r"v\d+\.\d+")


def meta_error(status: int, error: dict) -> tuple[int, dict]:
    return status, {"error": {**error, "type": "OAuthException", "fbtrace_id": "A" + secrets.token_hex(10)}}


def invalid(message: str, subcode: int | None = None) -> tuple[int, dict]:
    return meta_error(400, {"message": message, "code": 100, **({"error_subcode": subcode} if subcode else {})})


class FakeGraph:
    instagram_counts_bytes = True  # Meta's Instagram Send API: "UTF-8 and 1000 bytes or less"

    def __init__(self, app_secret: str = "app-secret", page_id: str = "1000", instagram_id: str = "1780000",
                 page_token: str = "page-token"):
        self.app_secret, self.page_id, self.instagram_id = app_secret, page_id, instagram_id
        self.page_token = page_token
        self.calls: list[dict] = []
        self.clock = time.time
        self.psid_for_commenter: dict[str, str] = {}
        self.platform_of: dict[str, str] = {}      # recipient id -> "messenger" | "instagram"
        self.last_seen: dict[str, float] = {}      # recipient id -> seconds of their latest message / postback
        self.comments: dict[str, dict] = {}        # comment id -> {"platform", "from_id", "created_time"}
        self.posts: set[str] = set()
        self._failures: list[dict] = []
        self._private_replies: list[dict] = []
        self._public_replies: list[dict] = []
        self._reply_counts: dict[str, int] = defaultdict(int)
        self.lock = threading.RLock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self.do_POST()

            def do_DELETE(self):
                self.do_POST()

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload = fake.handle(self.command, self.path, self.headers, body)
                if status is None:  # a "network" failure: hang up without answering
                    self.close_connection = True
                    return
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json; charset=UTF-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # --- the Graph API ----------------------------------------------------------------------------------
    @staticmethod
    def _body(content_type: str, body: bytes) -> dict:
        if not body:
            return {}
        if content_type.startswith("application/json"):
            try:
                data = json.loads(body)
            except ValueError:
                return {}
            return data if isinstance(data, dict) else {}
        form = {}
        for key, values in parse_qs(body.decode(errors="replace"), keep_blank_values=True).items():
            try:  # Meta takes form fields holding JSON: recipient={"id": "..."}
                form[key] = json.loads(values[0])
            except ValueError:
                form[key] = values[0]
        return form

    def handle(self, method: str, raw_path: str, headers, body: bytes) -> tuple[int | None, dict]:
        split = urlsplit(raw_path)
        params = {key: values[0] for key, values in parse_qs(split.query, keep_blank_values=True).items()}
        data = self._body(headers.get("Content-Type") or "", body)
        authorization = headers.get("Authorization") or ""
        token = (params.get("access_token") or data.get("access_token")
                 or (authorization.split(" ", 1)[1] if " " in authorization else None))
        call = {"method": method, "path": split.path, "params": params, "json": data, "token": token}
        with self.lock:
            self.calls.append(call)
            status, answer = self._answer(method, split.path, data, token)
            call["status"], call["response"] = status, answer
        return status, answer

    def _answer(self, method: str, path: str, data: dict, token) -> tuple[int | None, dict]:
        for rule in self._failures:
            if rule["times"] > 0 and rule["path_contains"] in path:
                rule["times"] -= 1
                if rule["kind"] == "network":
                    return None, {}
                return meta_error(*ERRORS[rule["kind"]])
        if token != self.page_token:
            return meta_error(*ERRORS["bad_token" if token else "token"])
        parts = [part for part in path.split("/") if part]
        if parts and VERSION.fullmatch(parts[0]):
            parts = parts[1:]
        if method == "GET" and parts == ["me"]:
            return 200, {"id": self.page_id, "name": "Mairie de Test"}
        if method == "POST" and len(parts) == 2 and parts[0] in ("me", self.page_id) and parts[1] == "messages":
            return self._send(data)
        if method == "POST" and len(parts) == 2 and parts[1] in ("comments", "replies"):
            return self._public_reply(parts[0], parts[1], data)
        return meta_error(400, {"message": f"Unknown path components: /{'/'.join(parts)}", "code": 2500})

    def _send(self, data: dict) -> tuple[int, dict]:
        recipient = data.get("recipient") if isinstance(data.get("recipient"), dict) else {}
        if recipient.get("comment_id"):
            return self._private_reply(str(recipient["comment_id"]), data.get("message"))
        psid = str(recipient.get("id") or "")
        if psid not in self.platform_of:
            return meta_error(*ERRORS["unknown_user"])
        if "sender_action" in data:
            if data["sender_action"] not in SENDER_ACTIONS:
                return invalid("(#100) Param sender_action must be one of {typing_on, typing_off, mark_seen}")
            return self._window(psid, data) or (200, {"recipient_id": psid})
        problem = self._check_message(data.get("message"), self.platform_of[psid]) or self._window(psid, data)
        if problem:
            return problem
        return 200, {"recipient_id": psid, "message_id": "m_" + secrets.token_hex(16)}

    def _window(self, psid: str, data: dict) -> tuple[int, dict] | None:
        messaging_type, tag = data.get("messaging_type") or "RESPONSE", data.get("tag")
        if messaging_type in ("RESPONSE", "UPDATE"):
            if tag:
                return invalid("(#100) Param tag can only be used with messaging_type MESSAGE_TAG")
            limit = DAY
        elif messaging_type == "MESSAGE_TAG":
            if tag != "HUMAN_AGENT":
                return invalid("(#100) Param tag must be HUMAN_AGENT (the only tag a town's page may use)")
            limit = 7 * DAY
        else:
            return invalid("(#100) Param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG}")
        last = self.last_seen.get(psid)
        if last is None or self.clock() - last > limit:
            return meta_error(*ERRORS["window"])
        return None

    def _check_message(self, message, platform: str) -> tuple[int, dict] | None:
        if not isinstance(message, dict) or not (message.get("text") or message.get("attachment")):
            return invalid("(#100) Param message[text] must be a non-empty UTF-8 encoded string")
        text = message.get("text") or ""
        limit = TEXT_LIMITS[platform]
        in_bytes = platform == "instagram" and self.instagram_counts_bytes
        if (len(text.encode()) if in_bytes else len(text)) > limit:
            return invalid(f"(#100) Length of param message[text] must be less than or equal to {limit}")
        replies = message.get("quick_replies") or []
        if len(replies) > 13:
            return invalid("(#100) Param message[quick_replies] must have at most 13 elements")
        for index, reply in enumerate(replies):
            if reply.get("content_type", "text") != "text":
                continue
            if not reply.get("title") or len(reply["title"]) > 20:
                return invalid(f"(#100) Param message[quick_replies][{index}][title] must be a non-empty "
                               "string of at most 20 characters")
            if not reply.get("payload") or len(str(reply["payload"])) > 1000:
                return invalid(f"(#100) Param message[quick_replies][{index}][payload] must be a non-empty "
                               "string of at most 1000 characters")
        return None

    def _private_reply(self, comment_id: str, message) -> tuple[int, dict]:
        comment = self.comments.get(comment_id)
        if comment is None:
            return invalid(f"(#100) Unsupported post request. Object with ID '{comment_id}' does not exist, "
                           "cannot be loaded due to missing permissions, or does not support this operation", 33)
        if any(reply["comment_id"] == comment_id for reply in self._private_replies):
            return meta_error(*ERRORS["private_reply_sent"])
        if self.clock() - comment["created_time"] > 7 * DAY:
            return meta_error(*ERRORS["window"])
        platform = "instagram" if comment["platform"] == "instagram" else "messenger"
        problem = self._check_message(message, platform)
        if problem:
            return problem
        psid = self.psid_for_commenter.get(comment["from_id"], "psid-" + comment["from_id"])
        self.platform_of.setdefault(psid, platform)  # known, but no window: Meta opens none here
        answer = {"recipient_id": psid, "message_id": "m_" + secrets.token_hex(16)}
        self._private_replies.append({"comment_id": comment_id, "platform": comment["platform"],
                                      "message": message.get("text"), **answer})
        return 200, answer

    def _public_reply(self, object_id: str, edge: str, data: dict) -> tuple[int, dict]:
        comment = self.comments.get(object_id)
        platform = "instagram" if edge == "replies" else "facebook"
        if not ((comment and comment["platform"] == platform) or (edge == "comments" and object_id in self.posts)):
            return invalid(f"(#100) Unsupported post request. Object with ID '{object_id}' does not exist, "
                           "cannot be loaded due to missing permissions, or does not support this operation", 33)
        text = data.get("message")
        if not isinstance(text, str) or not text.strip():
            return invalid("(#100) Missing message or attachment")
        self._reply_counts[object_id] += 1
        new_id = f"{object_id}_r{self._reply_counts[object_id]}"
        self._public_replies.append({"comment_id": object_id, "platform": platform, "message": text, "id": new_id})
        return 200, {"id": new_id}

    # --- what the tests look at -------------------------------------------------------------------------
    def fail_next(self, kind: str, times: int = 1, path_contains: str = "") -> None:
        """The next ``times`` calls whose path contains ``path_contains`` answer Meta's error for ``kind``
        (rate_limit, token, window, unreachable, temporary, permission; "network" hangs up)."""
        if kind not in ERRORS and kind != "network":
            raise ValueError(f"unknown failure kind {kind!r}")
        with self.lock:
            self._failures.append({"kind": kind, "times": times, "path_contains": path_contains})

    def messages(self, recipient_id: str | None = None, *, include_failed: bool = False) -> list[dict]:
        """The Send API calls carrying a message (accepted ones unless ``include_failed``)."""
        with self.lock:
            return [call for call in self.calls
                    if call["path"].endswith("/messages") and isinstance(call["json"].get("message"), dict)
                    and (include_failed or call.get("status") == 200)
                    and (recipient_id is None or recipient_id in self._recipient(call))]

    def texts(self, recipient_id: str) -> list[str]:
        return [call["json"]["message"].get("text", "") for call in self.messages(recipient_id)]

    def sender_actions(self, recipient_id: str, *, include_failed: bool = False) -> list[str]:
        with self.lock:
            return [call["json"]["sender_action"] for call in self.calls
                    if call["path"].endswith("/messages") and "sender_action" in call["json"]
                    and (include_failed or call.get("status") == 200) and recipient_id in self._recipient(call)]

    def comment_replies(self, comment_id: str | None = None) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self._public_replies if comment_id is None or r["comment_id"] == comment_id]

    def private_replies(self, comment_id: str | None = None) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self._private_replies if comment_id is None or r["comment_id"] == comment_id]

    @staticmethod
    def _recipient(call: dict) -> tuple:
        recipient = call["json"].get("recipient")
        recipient = recipient if isinstance(recipient, dict) else {}
        return tuple(str(recipient[key]) for key in ("id", "comment_id") if key in recipient)

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "a call"):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.02)

    # --- webhooks, as Meta sends them ---------------------------------------------------------------------
    @staticmethod
    def encode(payload: dict) -> bytes:
        """Meta's raw body: ASCII JSON with escaped slashes (so a gateway must verify the raw bytes)."""
        return json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode()

    def sign(self, body: bytes) -> str:
        return "sha256=" + hmac.new(self.app_secret.encode(), body, hashlib.sha256).hexdigest()

    def deliver(self, url: str, payload: dict, *, signature: str | None = None,
                timeout: float = 10) -> requests.Response:
        body = self.encode(payload)
        headers = {"Content-Type": "application/json", "User-Agent": "facebookexternalua",
                   "X-Hub-Signature": "sha1=" + hmac.new(self.app_secret.encode(), body, hashlib.sha1).hexdigest(),
                   "X-Hub-Signature-256": signature if signature is not None else self.sign(body)}
        return requests.post(url, data=body, headers=headers, timeout=timeout)

    def subscribe(self, url: str, verify_token: str, challenge: str = "1158201444",
                  timeout: float = 10) -> requests.Response:
        """Meta's webhook verification request (the gateway must echo ``hub.challenge``)."""
        return requests.get(url, params={"hub.mode": "subscribe", "hub.verify_token": verify_token,
                                         "hub.challenge": challenge}, timeout=timeout)

    # --- payload builders ---
    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _seen(self, psid: str, platform: str, timestamp_ms: int) -> None:
        with self.lock:
            self.platform_of.setdefault(psid, platform)
            self.last_seen[psid] = max(self.last_seen.get(psid, 0.0), timestamp_ms / 1000)

    def _account(self, platform: str) -> str:
        if platform not in ("messenger", "instagram"):
            raise ValueError(f"unknown platform {platform!r}")
        return self.instagram_id if platform == "instagram" else self.page_id

    def message_event(self, psid: str, text: str | None = None, *, mid: str | None = None, platform: str = "messenger",
                      timestamp_ms: int | None = None, attachments: list[dict] | None = None,
                      quick_reply: str | None = None) -> dict:
        timestamp_ms = self._now_ms() if timestamp_ms is None else timestamp_ms
        message: dict = {"mid": mid or "m_" + secrets.token_hex(16)}
        if text is not None:
            message["text"] = text
        if quick_reply is not None:
            message["quick_reply"] = {"payload": quick_reply}
        if attachments:
            message["attachments"] = attachments
        event = {"sender": {"id": psid}, "recipient": {"id": self._account(platform)}, "timestamp": timestamp_ms,
                 "message": message}
        self._seen(psid, platform, timestamp_ms)
        return event

    def postback_event(self, psid: str, payload: str, title: str = "Démarrer", platform: str = "messenger",
                       timestamp_ms: int | None = None) -> dict:
        timestamp_ms = self._now_ms() if timestamp_ms is None else timestamp_ms
        event = {"sender": {"id": psid}, "recipient": {"id": self._account(platform)}, "timestamp": timestamp_ms,
                 "postback": {"title": title, "payload": payload, "mid": "m_" + secrets.token_hex(16)}}
        self._seen(psid, platform, timestamp_ms)
        return event

    def echo_event(self, psid: str, text: str = "Bonjour", *, platform: str = "messenger", mid: str | None = None,
                   timestamp_ms: int | None = None, app_id: int = 1517776481860111) -> dict:
        """The page's own message coming back (``is_echo``)."""
        return {"sender": {"id": self._account(platform)}, "recipient": {"id": psid},
                "timestamp": self._now_ms() if timestamp_ms is None else timestamp_ms,
                "message": {"mid": mid or "m_" + secrets.token_hex(16), "is_echo": True, "app_id": app_id,
                            "text": text}}

    def read_event(self, psid: str, *, platform: str = "messenger", mid: str | None = None,
                   timestamp_ms: int | None = None) -> dict:
        timestamp_ms = self._now_ms() if timestamp_ms is None else timestamp_ms
        read = {"mid": mid or "m_" + secrets.token_hex(16)} if platform == "instagram" else {"watermark": timestamp_ms}
        return {"sender": {"id": psid}, "recipient": {"id": self._account(platform)}, "timestamp": timestamp_ms,
                "read": read}

    def delivery_event(self, psid: str, *, mids: list[str] | None = None, platform: str = "messenger",
                       timestamp_ms: int | None = None) -> dict:
        timestamp_ms = self._now_ms() if timestamp_ms is None else timestamp_ms
        return {"sender": {"id": psid}, "recipient": {"id": self._account(platform)}, "timestamp": timestamp_ms,
                "delivery": {"mids": mids or ["m_" + secrets.token_hex(16)], "watermark": timestamp_ms}}

    def batch(self, events: list, platform: str = "messenger") -> dict:
        """A webhook body; a list of lists of events gives one entry per inner list."""
        groups = events if events and all(isinstance(item, list) for item in events) else [events]
        return {"object": "instagram" if platform == "instagram" else "page",
                "entry": [{"id": self._account(platform), "time": self._now_ms(), "messaging": group}
                          for group in groups]}

    def feed_comment(self, comment_id: str, post_id: str, text: str, *, from_id: str = "u-1",
                     from_name: str = "Marie Dupont", parent_id: str | None = None, verb: str = "add",
                     created_time: int | None = None) -> dict:
        """A Facebook page ``feed`` change for a comment (``created_time`` in unix seconds, default now)."""
        created_time = int(self.clock()) if created_time is None else int(created_time)
        with self.lock:
            self.posts.add(post_id)
            self.comments.setdefault(comment_id, {"platform": "facebook", "from_id": from_id,
                                                  "created_time": created_time})
        permalink = f"https://www.facebook.com/{self.page_id}/posts/{post_id.rsplit('_', 1)[-1]}"
        value = {"from": {"id": from_id, "name": from_name},
                 "post": {"status_type": "added_photos", "is_published": True, "permalink_url": permalink,
                          "promotion_status": "inactive", "id": post_id,
                          "updated_time": time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(created_time))},
                 "message": text, "post_id": post_id, "comment_id": comment_id, "created_time": created_time,
                 "item": "comment", "parent_id": parent_id or post_id, "verb": verb}
        return {"object": "page", "entry": [{"id": self.page_id, "time": created_time,
                                             "changes": [{"field": "feed", "value": value}]}]}

    def instagram_comment(self, comment_id: str, media_id: str, text: str, *, from_id: str = "ig-u-1",
                          username: str = "marie.d", parent_id: str | None = None,
                          created_time: int | None = None) -> dict:
        """An Instagram ``comments`` change (``created_time`` in unix seconds, default now)."""
        created_time = int(self.clock()) if created_time is None else int(created_time)
        with self.lock:
            self.comments.setdefault(comment_id, {"platform": "instagram", "from_id": from_id,
                                                  "created_time": created_time})
        value = {"from": {"id": from_id, "username": username},
                 "media": {"id": media_id, "media_product_type": "FEED"}, "id": comment_id, "text": text}
        if parent_id:
            value["parent_id"] = parent_id
        return {"object": "instagram", "entry": [{"id": self.instagram_id, "time": created_time,
                                                  "changes": [{"field": "comments", "value": value}]}]}
