"""Several copies of a gateway: each staff message sent once (outbox claims on PostgreSQL), one
active sender and the others standing by (bot/leadership.py on a real Redis)."""
from __future__ import annotations

import asyncio
import threading
import time

from bot import relay
from bot.channels.gateway import OutboxPump
from bot.leadership import Leadership
from bot.shared_state import RedisState
from bot.tickets import TicketStore


def test_each_outbox_message_is_sent_once_by_three_gateway_processes(pg_store, postgres_url):
    for number in range(120):
        relay.send_to_citizen(pg_store, f"tg-{number % 7}", "telegram", f"Réponse {number}")
    sent: list[tuple[int, int]] = []
    guard = threading.Lock()

    def gateway(copy: int) -> None:
        store = TicketStore(postgres_url)  # a process of its own: its own engine and connections

        async def deliver(item) -> None:
            await asyncio.sleep(0.001)
            with guard:
                sent.append((copy, item.id))

        pump = OutboxPump(store, lambda item: item.channel == "telegram", deliver, f"copy {copy}")
        for _round in range(3):
            asyncio.run(pump.deliver_pending())

    threads = [threading.Thread(target=gateway, args=(copy,)) for copy in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    ids = [item_id for _copy, item_id in sent]
    assert len(ids) == 120 and len(set(ids)) == 120
    assert not relay.pending(pg_store, "telegram")
    assert len({copy for copy, _id in sent}) >= 2  # the work was shared, not serialised on one copy


def test_a_failed_send_is_retried_by_any_copy(pg_store, postgres_url):
    item = relay.send_to_citizen(pg_store, "tg-1", "telegram", "Bonjour")

    async def broken(_item) -> None:
        raise ConnectionError("Telegram unreachable")

    delivered: list[int] = []

    async def working(item) -> None:
        delivered.append(item.id)

    asyncio.run(OutboxPump(TicketStore(postgres_url), lambda i: True, broken, "copy 1").deliver_pending())
    assert relay.pending(pg_store, "telegram")[0].last_error
    asyncio.run(OutboxPump(TicketStore(postgres_url), lambda i: True, working, "copy 2").deliver_pending())
    assert delivered == [item.id] and not relay.pending(pg_store, "telegram")


def test_a_claimed_message_goes_to_another_copy_once_the_claim_lapses(pg_store):
    item = relay.send_to_citizen(pg_store, "tg-2", "telegram", "Bonjour")
    assert relay.claim(pg_store, item.id, seconds=0.5)  # a copy took it, then died
    assert not relay.claim(pg_store, item.id)
    time.sleep(0.7)
    assert relay.claim(pg_store, item.id)


def test_one_copy_is_active_and_a_standby_takes_over(redis_url):
    first = Leadership("test-gateway", shared=RedisState(redis_url), ttl=1.0)
    second = Leadership("test-gateway", shared=RedisState(redis_url), ttl=1.0)
    assert first.hold() and not second.hold()
    assert first.hold()  # renewed
    assert second.holder() == first.me
    started = time.monotonic()  # the active copy dies (stops renewing): the standby takes over
    assert second.wait_until_active(say=lambda text: None)
    assert 0.5 < time.monotonic() - started < 3
    assert not first.hold()
    second.resign()
    assert first.hold()


def test_a_copy_that_lost_its_hold_is_told(redis_url):
    state = RedisState(redis_url)
    active = Leadership("test-lost", shared=state, ttl=0.6)
    assert active.hold()
    lost = threading.Event()
    active.keep(on_lost=lost.set)
    state.redis.set(active.key, "another-copy", px=5000)  # e.g. it was cut off and another took over
    assert lost.wait(3)


def test_a_standby_gateway_sends_nothing(pg_store, postgres_url, redis_url):
    relay.send_to_citizen(pg_store, "m-1", "messenger", "Bonjour")
    holder = Leadership("test-meta", shared=RedisState(redis_url))
    assert holder.hold()
    sent: list[int] = []

    async def deliver(item) -> None:
        sent.append(item.id)

    standby = OutboxPump(TicketStore(postgres_url), lambda i: True, deliver, "standby",
                         leadership=Leadership("test-meta", shared=RedisState(redis_url)))
    asyncio.run(standby.deliver_pending())
    assert sent == []
    holder.resign()
    asyncio.run(standby.deliver_pending())
    assert len(sent) == 1


def test_without_redis_every_copy_is_active(monkeypatch):
    monkeypatch.delenv("GUICHET_REDIS_URL", raising=False)
    assert Leadership("alone").hold()


def test_two_telegram_gateway_processes_one_reads_and_the_other_takes_over(tmp_path, redis_url):
    """Two copies of the Telegram gateway (two servers): one reads the bot's updates, the other
    stands by; when the active one is killed, the standby answers the next message, once."""
    import os
    import signal
    import subprocess
    import sys

    from tests.test_telegram import TOKEN, FakeBotApi, FakeRasa, message

    fake = FakeBotApi()
    rasa = FakeRasa([(200, [{"recipient_id": "x", "text": f"Réponse {n}"}]) for n in range(1, 4)])
    database_url = f"sqlite:///{tmp_path / 'guichet.db'}"
    TicketStore(database_url)  # migrated once, before both copies start
    env = dict(os.environ, GUICHET_TELEGRAM_TOKEN=TOKEN, GUICHET_TELEGRAM_BASE_URL=fake.base_url,
               GUICHET_DATABASE_URL=database_url, GUICHET_RASA_URL=rasa.url, GUICHET_REDIS_URL=redis_url,
               GUICHET_VAR_DIR=str(tmp_path / "var"))
    env.pop("GUICHET_TELEGRAM_CM_CHAT", None)
    copies = []
    try:
        for number in range(2):
            log = open(tmp_path / f"telegram-{number}.log", "wb")
            copies.append(subprocess.Popen([sys.executable, "-m", "bot.channels.telegram"], env=env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))
            time.sleep(3 if number == 0 else 0)
        fake.push({"message": message(4242, "bonjour")})
        fake.wait_text(4242, "Réponse 1", timeout=60)
        logs = lambda: [(tmp_path / f"telegram-{n}.log").read_text(errors="replace") for n in range(2)]  # noqa: E731
        deadline = time.monotonic() + 30
        while not any("une autre instance est active" in text for text in logs()) and time.monotonic() < deadline:
            time.sleep(0.2)
        standby = next(n for n, text in enumerate(logs()) if "une autre instance est active" in text)
        active = 1 - standby
        os.killpg(copies[active].pid, signal.SIGKILL)  # the active copy crashes
        copies[active].wait(10)
        # Telegram keeps what no reader confirmed; the fake hands an update to whichever poll is
        # open, even a dead copy's last one: the next message is sent once the standby reads.
        deadline = time.monotonic() + 30
        while "prend le relais" not in logs()[standby] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "prend le relais" in logs()[standby]
        fake.push({"message": message(4242, "vous êtes là ?")})
        fake.wait_text(4242, "Réponse 2", timeout=60)
        time.sleep(1)
        assert fake.texts(4242) == ["Réponse 1", "Réponse 2"]  # each message answered once
    finally:
        for process in copies:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        fake.close()
        rasa.close()
