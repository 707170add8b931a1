"""``python -m bot.channels.webchat``: the website chat's server (settings from the environment)."""
from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
from pathlib import Path

from bot.channels import gateway as core
from bot.channels.webchat.server import WebchatSettings, build_server

logger = logging.getLogger("bot.channels.webchat")


async def serve(settings: WebchatSettings) -> None:
    server = build_server(settings)
    port = await server.start()
    logger.info("web chat listening on %s:%s/chat/ (demo: /chat/demo)", settings.listen, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop()


def start_process(rasa_url: str, log_path: Path, environ: dict | None = None) -> subprocess.Popen:
    """Start the server as its own process (what ``guichet run`` does)."""
    return core.start_process("bot.channels.webchat", rasa_url, log_path, environ)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(WebchatSettings.from_env()))
