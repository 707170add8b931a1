"""``python -m bot.channels.meta``: the Meta gateway process (settings from the environment)."""
from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
from pathlib import Path

from bot.channels import gateway as core
from bot.channels.meta.gateway import MetaSettings, build_gateway

logger = logging.getLogger("bot.channels.meta")


async def serve(settings: MetaSettings) -> None:
    gateway = build_gateway(settings)
    port = await gateway.start()
    logger.info("Meta gateway listening on %s:%s%s", settings.listen, port, settings.path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.info("Meta gateway stopping: finishing the events received")
    await gateway.stop()


def run() -> None:
    settings = MetaSettings.from_env()
    if not settings.configured:
        raise SystemExit("Passerelle Meta : réglages manquants : " + ", ".join(settings.missing())
                         + " (README, « Facebook et Instagram »).")
    asyncio.run(serve(settings))


def start_process(rasa_url: str, log_path: Path, environ: dict | None = None) -> subprocess.Popen:
    """Start the gateway as its own process (what ``guichet run`` does when its settings are present)."""
    return core.start_process("bot.channels.meta", rasa_url, log_path, environ)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run()
