"""The conversation lock shared by several Rasa servers (bot/integrations/lock_store.py), on a real Redis.

Two "servers" are two threads, each with its own event loop and its own lock store client, as two
Rasa processes would be: they take the lock of one conversation in turn and note who is inside.
"""
from __future__ import annotations

import asyncio
import threading
import time

import pytest
from rasa.core.lock_store import LockError, RedisLockStore

from bot.integrations.lock_store import SharedLockStore


def _hammer(make_store, conversation: str, servers: int = 2, rounds: int = 150, hold: float = 0.002):
    """Every server enters the conversation's lock ``rounds`` times.

    Returns (overlaps, lock errors, stalls, entries): a stall is a turn that waited over 5 s."""
    state = {"inside": 0, "overlaps": 0, "errors": 0, "stalls": 0, "entries": []}
    guard = threading.Lock()

    def server(number: int) -> None:
        async def one_round(store, round_: int) -> None:
            async with store.lock(conversation, lock_lifetime=2, wait_time_in_seconds=0.001):
                with guard:
                    state["inside"] += 1
                    if state["inside"] > 1:
                        state["overlaps"] += 1
                    state["entries"].append((number, round_))
                await asyncio.sleep(hold)
                with guard:
                    state["inside"] -= 1

        async def run() -> None:
            store = make_store()
            for round_ in range(rounds):
                try:
                    await asyncio.wait_for(one_round(store, round_), 5)
                except LockError:
                    with guard:
                        state["errors"] += 1
                except asyncio.TimeoutError:
                    with guard:
                        state["stalls"] += 1
                        state["inside"] = 0
                        if state["stalls"] >= 3:
                            return

        asyncio.run(run())

    threads = [threading.Thread(target=server, args=(n,)) for n in range(servers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return state["overlaps"], state["errors"], state["stalls"], state["entries"]


def test_rasa_redis_lock_store_lets_two_servers_in_at_once(redis_url):
    """RasaHQ/rasa#9213, measured: Rasa's own RedisLockStore reads, changes and writes back its lock,
    so two servers both get in, or one is thrown out with a LockError, or a lost ticket stalls the
    conversation until it expires (``lock_lifetime``, 60 s by default; 2 s here)."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    started = time.monotonic()
    overlaps, errors, stalls, entries = _hammer(lambda: RedisLockStore(host="127.0.0.1", port=port, db=0), "stock",
                                                rounds=60)
    print(f"Rasa RedisLockStore, 2 servers x 60 rounds: {overlaps} overlaps, {errors} lock errors, "
          f"{stalls} stalls, {time.monotonic() - started:.1f} s")
    assert overlaps + errors + stalls > 0


def test_shared_lock_store_serves_one_server_at_a_time(redis_url):
    started = time.monotonic()
    overlaps, errors, stalls, entries = _hammer(lambda: SharedLockStore(url=redis_url), "ours", servers=3, rounds=150)
    print(f"SharedLockStore, 3 servers x 150 rounds: {overlaps} overlaps, {errors} lock errors, "
          f"{stalls} stalls, {time.monotonic() - started:.1f} s")
    assert (overlaps, errors, stalls) == (0, 0, 0)
    assert len(entries) == 450 and len(set(entries)) == 450


def test_tickets_are_served_in_arrival_order(redis_url):
    async def run() -> list:
        store = SharedLockStore(url=redis_url)
        order: list = []

        async def message(number: int) -> None:
            async with store.lock("fifo"):
                order.append(number)
                await asyncio.sleep(0.01)

        tasks = []
        for number in range(8):
            tasks.append(asyncio.ensure_future(message(number)))
            await asyncio.sleep(0.002)  # arrive one after the other
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(run()) == list(range(8))


def test_a_dead_server_blocks_the_conversation_only_for_the_lifetime(redis_url):
    """A server killed while it holds the lock never releases it: its ticket expires, the next goes in."""
    async def run() -> float:
        dead = SharedLockStore(url=redis_url, lifetime=1.0)
        counter, queue, tickets = dead._keys("killed")
        await dead._enter(keys=[counter, queue], args=[tickets, 1000])  # entered, then the server died
        alive = SharedLockStore(url=redis_url, lifetime=1.0)
        started = time.monotonic()
        async with alive.lock("killed"):
            return time.monotonic() - started

    waited = asyncio.run(run())
    assert 0.5 < waited < 3.0


def test_a_slow_message_keeps_the_lock_while_its_server_lives(redis_url):
    """The ticket is renewed: a message slower than the lifetime is not overtaken."""
    async def run() -> list:
        store = SharedLockStore(url=redis_url, lifetime=0.4)
        order: list = []

        async def slow() -> None:
            async with store.lock("slow"):
                order.append("slow in")
                await asyncio.sleep(1.2)
                order.append("slow out")

        async def next_one() -> None:
            await asyncio.sleep(0.05)
            async with store.lock("slow"):
                order.append("next")

        await asyncio.gather(slow(), next_one())
        return order

    assert asyncio.run(run()) == ["slow in", "slow out", "next"]


def test_an_unreachable_redis_is_a_lock_error():
    async def run() -> None:
        store = SharedLockStore(url="redis://127.0.0.1:1/0")
        async with store.lock("nowhere"):
            pass

    with pytest.raises(LockError):
        asyncio.run(run())
