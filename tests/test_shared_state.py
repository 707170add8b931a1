"""Limits counted once across servers (bot/shared_state.py on a real Redis): floods and failed logins."""
from __future__ import annotations

import time
import uuid

from bot.flood import FloodGuard
from bot.shared_state import RedisState
from bot.web.security import LoginThrottle


def test_a_flood_is_counted_once_across_two_servers(redis_url):
    state = RedisState(redis_url)
    name = f"flood-{uuid.uuid4().hex[:6]}"
    server_a = FloodGuard(per_minute=6, burst=4, name=name, shared=RedisState(redis_url))
    server_b = FloodGuard(per_minute=6, burst=4, name=name, shared=state)
    decisions = [(server_a if i % 2 == 0 else server_b).check("citizen-1") for i in range(7)]
    assert [d.allowed for d in decisions] == [True] * 4 + [False] * 3
    assert [d.notify for d in decisions[4:]] == [True, False, False]  # one slow-down notice in all
    assert server_a.check("citizen-2").allowed  # another conversation has its own bucket
    time.sleep(10.5)  # 6 a minute: one message allowed again after 10 s, whichever server
    assert server_b.check("citizen-1").allowed
    assert not server_a.check("citizen-1").allowed


def test_guards_of_other_names_do_not_share_buckets(redis_url):
    state = RedisState(redis_url)
    rest = FloodGuard(per_minute=1, burst=1, name=f"rest-{uuid.uuid4().hex[:6]}", shared=state)
    webchat = FloodGuard(per_minute=1, burst=1, name=f"webchat-{uuid.uuid4().hex[:6]}", shared=state)
    assert rest.check("x").allowed and webchat.check("x").allowed
    assert not rest.check("x").allowed
    rest.reset("x")
    assert rest.check("x").allowed


def test_the_redis_store_is_used_when_configured(redis_url, monkeypatch):
    monkeypatch.setenv("GUICHET_REDIS_URL", redis_url)
    assert FloodGuard.from_env(name="rest")._shared is not None
    assert LoginThrottle()._shared is not None
    monkeypatch.delenv("GUICHET_REDIS_URL")
    assert FloodGuard.from_env(name="rest")._shared is None
    assert LoginThrottle()._shared is None


def test_failed_logins_are_counted_by_every_staff_web_process(redis_url):
    web_1 = LoginThrottle(limit=3, window=60, shared=RedisState(redis_url))
    web_2 = LoginThrottle(limit=3, window=60, shared=RedisState(redis_url))
    address = f"203.0.113.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:4]}"
    now = time.time()
    web_1.failed(address, now)
    web_2.failed(address, now)
    assert not web_1.blocked(address, now)
    web_2.failed(address, now)
    assert web_1.blocked(address, now) and web_2.blocked(address, now)
    assert not web_1.blocked("198.51.100.7", now)


def test_failures_leave_the_window(redis_url):
    throttle = LoginThrottle(limit=1, window=1.0, shared=RedisState(redis_url))
    address = f"window-{uuid.uuid4().hex}"
    throttle.failed(address, time.time())
    assert throttle.blocked(address, time.time())
    time.sleep(1.2)
    assert not throttle.blocked(address, time.time())
