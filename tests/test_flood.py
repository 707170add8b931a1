"""The flood guard (bot/flood.py): a token bucket per conversation, one notice per episode."""
from __future__ import annotations

import threading

import pytest

from bot.flood import FloodGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refused_with_one_notice():
    clock = Clock()
    guard = FloodGuard(per_minute=20, burst=10, clock=clock)
    assert [guard.allow("a") for _ in range(10)] == [True] * 10
    first, second, third = guard.check("a"), guard.check("a"), guard.check("a")
    assert not first.allowed and first.notify
    assert not second.allowed and not second.notify and not third.notify
    assert guard.notice_sent("a")
    assert guard.allow("b")  # other conversations are not affected


def test_refills_at_the_sustained_rate_and_a_new_episode_notifies_again():
    clock = Clock()
    guard = FloodGuard(per_minute=20, burst=2, clock=clock)
    assert guard.allow("a") and guard.allow("a")
    assert guard.check("a").notify
    clock.now += 2.9  # 20/min = one message every 3 s
    assert not guard.allow("a")
    clock.now += 0.2
    assert guard.allow("a")
    assert not guard.notice_sent("a")  # the episode ended with an allowed message
    decision = guard.check("a")
    assert not decision.allowed and decision.notify
    clock.now += 3600
    assert [guard.allow("a") for _ in range(3)] == [True, True, False]  # never more than the burst


def test_mark_notice_sent_for_callers_of_allow():
    guard = FloodGuard(per_minute=60, burst=1, clock=Clock())
    assert guard.allow("t")
    assert not guard.allow("t") and not guard.notice_sent("t")
    guard.mark_notice_sent("t")
    assert guard.notice_sent("t") and not guard.check("t").notify


def test_settings_from_environment_with_sane_defaults():
    guard = FloodGuard.from_env({})
    assert (guard.per_minute, guard.burst, guard.enabled) == (20, 10, True)
    guard = FloodGuard.from_env({"GUICHET_FLOOD_PER_MINUTE": "120", "GUICHET_FLOOD_BURST": "30"})
    assert (guard.per_minute, guard.burst) == (120, 30)
    guard = FloodGuard.from_env({"GUICHET_FLOOD_PER_MINUTE": "abc", "GUICHET_FLOOD_BURST": "-3"})
    assert (guard.per_minute, guard.burst) == (20, 10)
    disabled = FloodGuard.from_env({"GUICHET_FLOOD_DISABLED": "1"})
    assert all(disabled.allow("x") for _ in range(100))
    with pytest.raises(ValueError):
        FloodGuard(per_minute=0)


def test_thread_safe_exactly_the_burst_gets_through():
    guard = FloodGuard(per_minute=0.001, burst=50)
    allowed = []
    lock = threading.Lock()

    def hammer() -> None:
        mine = sum(guard.allow("same") for _ in range(100))
        with lock:
            allowed.append(mine)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 50


def test_memory_is_bounded():
    clock = Clock()
    guard = FloodGuard(per_minute=60, burst=1, clock=clock, max_conversations=100)
    for number in range(1000):
        guard.allow(f"c{number}")
        clock.now += 0.01
    assert len(guard._buckets) <= 100
