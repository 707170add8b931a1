"""Rasa's calls to the action server: retried on connection errors, capped in number (bot/integrations/action_client.py)."""
from __future__ import annotations

import asyncio
import json
import socket
import threading

import pytest

from bot.integrations import action_client


class FlakyActionServer:
    """Answers HTTP on loopback, but resets the first ``failures`` connections before reading them."""

    def __init__(self, failures: int, delay: float = 0.0):
        self.failures = failures
        self.delay = delay
        self.connections = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        import struct
        import time

        with self.lock:
            self.connections += 1
            reset = self.connections <= self.failures
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if reset:  # RST at once, like a connection closed under the client's feet
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, body = data.split(b"\r\n\r\n", 1)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            time.sleep(self.delay)
            answer = json.dumps({"events": [], "responses": [{"text": "ok"}], "echo": json.loads(body)}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: " + str(len(answer)).encode() + b"\r\n\r\n" + answer)
        finally:
            with self.lock:
                self.in_flight -= 1
            conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture
def endpoint():
    from rasa.utils.endpoints import EndpointConfig

    action_client.install()
    return lambda port: EndpointConfig(url=f"http://127.0.0.1:{port}/webhook")


def test_a_reset_connection_is_retried_and_the_action_answers(endpoint):
    server = FlakyActionServer(failures=2)
    try:
        result = asyncio.run(endpoint(server.port).request(json={"next_action": "action_answer_faq"}, method="post"))
    finally:
        server.close()
    assert result["responses"] == [{"text": "ok"}] and result["echo"] == {"next_action": "action_answer_faq"}
    assert server.connections == 3


def test_a_server_that_keeps_failing_still_raises(endpoint):
    import aiohttp

    server = FlakyActionServer(failures=100)
    try:
        with pytest.raises(aiohttp.ClientConnectionError):
            asyncio.run(endpoint(server.port).request(json={}, method="post"))
    finally:
        server.close()
    assert server.connections == action_client.ATTEMPTS


def test_calls_in_flight_are_capped(endpoint):
    server = FlakyActionServer(failures=0, delay=0.05)
    config = endpoint(server.port)

    async def many():
        return await asyncio.gather(*(config.request(json={"n": n}, method="post") for n in range(60)))

    try:
        results = asyncio.run(many())
    finally:
        server.close()
    assert sorted(r["echo"]["n"] for r in results) == list(range(60))
    assert server.most_in_flight <= action_client.MAX_CONCURRENT
