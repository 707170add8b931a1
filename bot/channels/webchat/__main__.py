"""``python -m bot.channels.webchat``: the website chat's server (settings from the environment)."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

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
    env = dict(os.environ if environ is None else environ, GUICHET_RASA_URL=rasa_url)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "bot.channels.webchat"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(WebchatSettings.from_env()))
