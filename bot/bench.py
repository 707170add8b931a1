"""`guichet bench` / `python -m bot.bench`: the speed of the whole assistant, side by side with stock Rasa.

One run:
1. trains (or reuses, by fingerprint, from var/bench/models/) two models on the same data/ and
   domain.yml: OURS (config.yml) and the STOCK anchor (bench/stock-config.yml: Rasa's default
   recipe, DIET + TED + UnexpecTED, with an epoch cap), each with Rasa's component cache off so
   the training time is a cold one;
2. for each model, starts the real stack (bot.stack.running_stack: action server, Rasa server
   with the SQL tracker store and the transcript broker, a fresh SQLite database) on loopback,
   warms it up, then replays the French conversation mix of bench/corpus.yml on the REST channel
   at 1, 8 and 32 concurrent conversations (latency of every message, messages/s), measures
   `/model/parse` alone on the same messages (the floor that understanding costs), reads the
   peak RSS (VmHWM) of the Rasa and action-server processes, and profiles where one message's
   time goes (the agent loaded in this process, timers around NLU, policies, custom actions,
   tracker store and event broker);
3. prints the tables, writes var/bench/latest.json (+ a timestamped copy) and var/bench/latest.md.

No part of this runs in the test suite except the pure helpers (tests/test_bench.py).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import random
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import yaml

from bot.settings import PROJECT_ROOT

BENCH_DIR = PROJECT_ROOT / "bench"
CORPUS = BENCH_DIR / "corpus.yml"
STOCK_CONFIG = BENCH_DIR / "stock-config.yml"
DEFAULT_OUT = PROJECT_ROOT / "var" / "bench"
DEFAULT_LEVELS = (1, 8, 32)
# Stock DIET ran 53-75 s an epoch on ~6,200 examples on these 2 cores (loaded): 100 epochs would
# take well over an hour, far beyond the 15-minute budget. The cap changes training time and
# accuracy, not the cost of one prediction (same network shapes).
DEFAULT_STOCK_EPOCHS = 3
DEFAULT_AT = "2026-11-24T10:00:00"


# --- corpus -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Conversation:
    id: str
    kind: str
    turns: tuple[str, ...]
    weight: int = 1


def load_corpus(path: Path = CORPUS) -> list[Conversation]:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("conversations"), list):
        raise ValueError(f"{path}: expected a mapping with a 'conversations' list")
    conversations = []
    for raw in data["conversations"]:
        turns = raw.get("turns")
        if not raw.get("id") or not isinstance(turns, list) or not turns:
            raise ValueError(f"{path}: conversation {raw!r} needs an id and turns (a non-empty list)")
        weight = int(raw.get("weight", 1))
        if weight < 1:
            raise ValueError(f"{path}: conversation {raw['id']}: weight must be >= 1")
        conversations.append(Conversation(str(raw["id"]), str(raw.get("kind", "other")),
                                          tuple(str(t) for t in turns), weight))
    return conversations


def mix(conversations: Sequence[Conversation], messages: int, seed: int = 5) -> list[Conversation]:
    """Weighted passes over the corpus, each shuffled, until at least ``messages`` messages."""
    one_pass = [c for c in conversations for _ in range(c.weight)]
    if not one_pass:
        return []
    rng = random.Random(seed)
    plan: list[Conversation] = []
    count = 0
    while count < messages:
        batch = list(one_pass)
        rng.shuffle(batch)
        for conversation in batch:
            plan.append(conversation)
            count += len(conversation.turns)
            if count >= messages:
                break
    return plan


def unique_messages(conversations: Iterable[Conversation]) -> list[str]:
    seen: dict[str, None] = {}
    for conversation in conversations:
        for turn in conversation.turns:
            seen.setdefault(turn, None)
    return list(seen)


# --- figures ----------------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(latencies_s: Sequence[float], wall_s: float, errors: int = 0) -> dict:
    ms = [x * 1000 for x in latencies_s]
    return {
        "messages": len(ms),
        "errors": errors,
        "wall_s": round(wall_s, 2),
        "msg_per_s": round(len(ms) / wall_s, 2) if wall_s > 0 else 0.0,
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "mean_ms": round(sum(ms) / len(ms), 1) if ms else 0.0,
    }


def ratio(ours: float, stock: float) -> float | None:
    return round(ours / stock, 2) if stock else None


def compare(ours: dict, stock: dict) -> dict:
    """our/stock ratios per concurrency: throughput (higher is better), latencies (lower is better)."""
    out = {}
    for level, figures in ours.get("levels", {}).items():
        anchor = stock.get("levels", {}).get(level)
        if not anchor:
            continue
        out[level] = {
            "throughput_x": ratio(figures["msg_per_s"], anchor["msg_per_s"]),
            "p50_x": ratio(figures["p50_ms"], anchor["p50_ms"]),
            "p95_x": ratio(figures["p95_ms"], anchor["p95_ms"]),
        }
    return out


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        value = f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return f"{value}{unit}"


def _training_notes(run: dict) -> str:
    notes = [word for word, flag in (("cached", run.get("training_cached")),
                                     ("side by side", run.get("training_side_by_side"))) if flag]
    return f" ({', '.join(notes)})" if notes else ""


def render_markdown(report: dict) -> str:
    """The short table of a run (also what the README and bench/RESULTS.md show)."""
    runs = report.get("runs", {})
    names = [name for name in ("ours", "stock") if name in runs]
    lines = [f"Run of {report.get('started', '?')} on {report.get('machine', '?')} "
             f"(load average at start {report.get('load_start', '?')}, at end {report.get('load_end', '?')})"
             + (f", bench-only levers: {', '.join(report['options']['levers'])}" if report.get("options", {}).get("levers") else "")
             + ".", ""]
    lines += ["| model | conversations at once | msg/s | p50 ms | p95 ms | p99 ms | errors |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in names:
        for level, f in runs[name].get("levels", {}).items():
            lines.append(f"| {name} | {level} | {_fmt(f['msg_per_s'])} | {_fmt(f['p50_ms'])} | {_fmt(f['p95_ms'])} "
                         f"| {_fmt(f['p99_ms'])} | {f['errors']} |")
    if any(f.get("cpu_ms_per_msg") for name in names for f in runs[name].get("levels", {}).values()):
        lines += ["", "| model | conversations at once | CPU ms a message: Rasa | action server | load generator |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for name in names:
            for level, f in runs[name].get("levels", {}).items():
                cpu = f.get("cpu_ms_per_msg") or {}
                lines.append(f"| {name} | {level} | {_fmt(cpu.get('rasa'))} | {_fmt(cpu.get('action_server'))} "
                             f"| {_fmt(cpu.get('load_generator'))} |")
    ratios = report.get("ratios") or {}
    if ratios:
        lines += ["", "| conversations at once | throughput ours/stock | p50 ours/stock | p95 ours/stock |",
                  "| ---: | ---: | ---: | ---: |"]
        for level, r in ratios.items():
            lines.append(f"| {level} | {_fmt(r['throughput_x'], '×')} | {_fmt(r['p50_x'], '×')} | {_fmt(r['p95_x'], '×')} |")
    lines += ["", "| model | /model/parse p50 ms | p95 ms | training s | stack start s | model load s "
              "| Rasa RSS peak MB | action server RSS peak MB |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in names:
        run = runs[name]
        parse = run.get("parse") or {}
        lines.append(f"| {name} | {_fmt(parse.get('p50_ms'))} | {_fmt(parse.get('p95_ms'))} "
                     f"| {_fmt(run.get('training_s'))}{_training_notes(run)} "
                     f"| {_fmt(run.get('stack_start_s'))} | {_fmt(run.get('model_load_s'))} "
                     f"| {_fmt(run.get('rss_peak_mb', {}).get('rasa'))} | {_fmt(run.get('rss_peak_mb', {}).get('action_server'))} |")
    profiles = {name: runs[name].get("profile") for name in names if runs[name].get("profile")}
    if profiles:
        categories = list(dict.fromkeys(c for p in profiles.values() for c in p["ms_per_message"]))
        lines += ["", "Where one message's time goes (in-process profile, one conversation at a time, mean ms per message):", "",
                  "| part | " + " | ".join(profiles) + " |", "| --- |" + " ---: |" * len(profiles)]
        for category in categories:
            lines.append(f"| {category} | " + " | ".join(_fmt(p["ms_per_message"].get(category)) for p in profiles.values()) + " |")
        lines.append("| **total (handle_message)** | " + " | ".join(_fmt(p["total_ms_per_message"]) for p in profiles.values()) + " |")
    servers = report.get("servers") or {}
    if servers:
        lines += ["", "Several servers (ours, PostgreSQL + Redis lock store, nginx, 2 action servers):", "",
                  "| Rasa servers | conversations at once | msg/s | p50 ms | p95 ms | errors | CPU ms a message: Rasa "
                  "| action servers |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for count, result in servers.items():
            for level, f in result.get("levels", {}).items():
                cpu = f.get("cpu_ms_per_msg") or {}
                lines.append(f"| {count} | {level} | {_fmt(f['msg_per_s'])} | {_fmt(f['p50_ms'])} | {_fmt(f['p95_ms'])} "
                             f"| {f['errors']} | {_fmt(cpu.get('rasa'))} | {_fmt(cpu.get('action_servers'))} |")
    if report.get("total_s") is not None:
        lines += ["", f"Whole run: {report['total_s']:.0f} s."]
    return "\n".join(lines) + "\n"


# --- processes --------------------------------------------------------------------------------
def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident memory (VmHWM) of a process and its children, in MB (Linux /proc)."""
    total = 0.0
    found = False
    for candidate in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{candidate}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
                    found = True
        except OSError:
            continue
    return round(total, 1) if found else None


def cpu_seconds(pid: int, with_children: bool = True) -> float | None:
    """User + system CPU time of a process (and its children) so far, in seconds (Linux /proc)."""
    total = 0.0
    found = False
    tick = os.sysconf("SC_CLK_TCK")
    for candidate in [pid, *(children(pid) if with_children else ())]:
        try:
            fields = Path(f"/proc/{candidate}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
        found = True
    return total if found else None


def cpu_per_message(before: dict, after: dict, messages: int) -> dict:
    """CPU ms per message of each process between two ``cpu_seconds`` readings."""
    return {name: (round((after[name] - before[name]) * 1000 / messages, 1)
                   if messages and before.get(name) is not None and after.get(name) is not None else None)
            for name in before}


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            found += [child, *children(child)]
    return found


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# --- training ---------------------------------------------------------------------------------
def fingerprint(config_text: str, paths: Iterable[Path]) -> str:
    digest = hashlib.sha256(config_text.encode())
    for path in sorted(paths):
        digest.update(str(path.relative_to(PROJECT_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def training_inputs() -> list[Path]:
    return [PROJECT_ROOT / "domain.yml", *sorted((PROJECT_ROOT / "data").rglob("*.yml"))]


def capped_config(text: str, epochs: int | None) -> str:
    """The config with every ``epochs`` set to the cap (None: unchanged)."""
    if epochs is None:
        return text
    config = yaml.safe_load(text)
    for section in ("pipeline", "policies"):
        for component in config.get(section) or []:
            if "epochs" in component:
                component["epochs"] = epochs
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


@dataclass
class Training:
    name: str
    model: Path
    meta: Path
    command: list[str] | None = None  # None: reused from the cache
    log: Path | None = None
    epochs: int | None = None
    config_path: Path | None = None


def plan_training(name: str, config_path: Path, out: Path, epochs: int | None = None) -> Training:
    """The model of this config + data + domain: reused when var/bench/models has it, else a cold training."""
    config_text = capped_config(config_path.read_text(encoding="utf-8"), epochs)
    key = fingerprint(config_text, training_inputs())
    models = out / "models"
    training = Training(name, models / f"{name}-{key}.tar.gz", models / f"{name}-{key}.json",
                        epochs=epochs, config_path=config_path)
    if training.model.exists() and training.meta.exists():
        return training
    models.mkdir(parents=True, exist_ok=True)
    config_file = models / f"{name}-{key}-config.yml"
    config_file.write_text(config_text, encoding="utf-8")
    training.log = out / f"train-{name}.log"
    training.command = [str(Path(sys.executable).parent / "rasa"), "train", "--config", str(config_file),
                        "--domain", "domain.yml", "--data", "data", "--out", str(models),
                        "--fixed-model-name", f"{name}-{key}", "--force"]
    return training


def train_all(trainings: Sequence[Training], log=print) -> dict[str, tuple[Path, float, bool]]:
    """Run the needed trainings side by side (Rasa's component cache off: cold figures)."""
    env = dict(os.environ, RASA_MAX_CACHE_SIZE="0", TF_CPP_MIN_LOG_LEVEL="3", SQLALCHEMY_SILENCE_UBER_WARNING="1")
    running = {}
    for training in trainings:
        if training.command:
            log(f"[{training.name}] training (cold, log: {training.log})...")
            handle = training.log.open("wb")
            running[training.name] = (subprocess.Popen(training.command, cwd=PROJECT_ROOT, env=env, stdout=handle,
                                                       stderr=subprocess.STDOUT), handle, time.monotonic())
    side_by_side = len(running) > 1
    for name, (process, handle, started) in running.items():
        code = process.wait()
        handle.close()
        training = next(t for t in trainings if t.name == name)
        seconds = round(time.monotonic() - started, 1)
        if code != 0 or not training.model.exists():
            raise RuntimeError(f"training {name} failed (code {code}); see {training.log}")
        training.meta.write_text(json.dumps({"training_s": seconds, "epochs_cap": training.epochs,
                                             "config": str(training.config_path), "side_by_side": side_by_side}))
        log(f"[{name}] trained in {seconds:.0f} s{' (side by side with the other training)' if side_by_side else ''}")
    results = {}
    for training in trainings:
        meta = json.loads(training.meta.read_text())
        results[training.name] = (training.model, meta["training_s"], training.name not in running,
                                  bool(meta.get("side_by_side")))
    return results


def ensure_model(name: str, config_path: Path, out: Path, epochs: int | None = None,
                 log=print) -> tuple[Path, float, bool]:
    """Train (cold) or reuse one model; returns (model, training seconds, reused)."""
    model, seconds, cached, _ = train_all([plan_training(name, config_path, out, epochs)], log)[name]
    return model, seconds, cached


# --- load -------------------------------------------------------------------------------------
async def _post(session, url: str, payload: dict) -> tuple[float, bool]:
    import aiohttp

    started = time.perf_counter()
    try:
        async with session.post(url, json=payload) as response:
            await response.read()
            ok = response.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError):
        ok = False
    return time.perf_counter() - started, ok


async def drive(rest_url: str, plan: Sequence[Conversation], concurrency: int, tag: str) -> dict:
    """Replay the conversations, ``concurrency`` at a time, each message after the previous reply."""
    import aiohttp

    queue: asyncio.Queue = asyncio.Queue()
    for conversation in plan:
        queue.put_nowait(conversation)
    latencies: list[float] = []
    errors = 0
    run_id = uuid.uuid4().hex[:6]

    async def worker(session) -> None:
        nonlocal errors
        while not queue.empty():
            conversation = queue.get_nowait()
            sender = f"bench-{tag}-{run_id}-{conversation.id}-{uuid.uuid4().hex[:8]}"
            for turn in conversation.turns:
                elapsed, ok = await _post(session, rest_url, {"sender": sender, "message": turn})
                latencies.append(elapsed)
                errors += not ok

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return summarize(latencies, wall, errors)


async def parse_floor(rasa_url: str, messages: Sequence[str], samples: int) -> dict:
    """`/model/parse` alone, one request at a time (understanding only: no dialogue, no action, no store)."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for text in messages[:5]:  # warm-up
            await _post(session, f"{rasa_url}/model/parse", {"text": text})
        started = time.perf_counter()
        for i in range(samples):
            elapsed, ok = await _post(session, f"{rasa_url}/model/parse", {"text": messages[i % len(messages)]})
            latencies.append(elapsed)
            errors += not ok
        wall = time.perf_counter() - started
    return summarize(latencies, wall, errors)


# --- profile ----------------------------------------------------------------------------------
class Timers:
    """Exclusive time per category for nested calls (one message at a time: a simple stack)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._stack: list[list[float]] = []

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        frame = [time.perf_counter(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            elapsed = time.perf_counter() - frame[0]
            self.totals[name] = self.totals.get(name, 0.0) + elapsed - frame[1]
            if self._stack:
                self._stack[-1][1] += elapsed

    def wrap_async(self, owner: Any, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)
        timers = self

        async def timed(*args, **kwargs):
            with timers.part(name):
                return await original(*args, **kwargs)

        setattr(owner, attribute, timed)

    def wrap_sync(self, owner: Any, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)
        timers = self

        def timed(*args, **kwargs):
            with timers.part(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)


PROFILE_PARTS = (
    "understanding (NLU pipeline)",
    "dialogue policies",
    "custom actions (HTTP to the action server, its DB work included)",
    "tracker store (SQL: load + save)",
    "event broker (transcript to the ticket DB)",
    "other (Rasa's message loop, lock store, forms, events)",
)


async def _profile(model: Path, stack: Any, endpoints_file: Path, plan: Sequence[Conversation]) -> dict:
    from rasa.core.actions.action import RemoteAction
    from rasa.core.agent import load_agent
    from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
    from rasa.core.processor import MessageProcessor
    from rasa.core.tracker_store import SQLTrackerStore
    from rasa.core.utils import AvailableEndpoints

    from bot.integrations.rasa_broker import TranscriptBroker
    from bot.integrations.tracker_store import GuichetSQLTrackerStore

    endpoints = AvailableEndpoints.read_endpoints(str(endpoints_file))
    started = time.perf_counter()
    agent = await load_agent(model_path=str(model), endpoints=endpoints)
    load_s = time.perf_counter() - started

    timers = Timers()
    processor = agent.processor
    timers.wrap_async(processor, "parse_message", PROFILE_PARTS[0])
    timers.wrap_sync(processor, "_predict_next_with_tracker", PROFILE_PARTS[1])
    timers.wrap_async(RemoteAction, "run", PROFILE_PARTS[2])
    per_action: dict[str, list[float]] = {}
    timed_run = RemoteAction.run

    async def run_and_count(action, *args, **kwargs):
        begin = time.perf_counter()
        try:
            return await timed_run(action, *args, **kwargs)
        finally:
            per_action.setdefault(action.name(), []).append(time.perf_counter() - begin)

    RemoteAction.run = run_and_count
    for store_class in (SQLTrackerStore, GuichetSQLTrackerStore):  # ours overrides them
        for attribute in ("retrieve", "save", "retrieve_full_tracker"):
            if attribute in vars(store_class):
                timers.wrap_async(store_class, attribute, PROFILE_PARTS[3])
    timers.wrap_sync(TranscriptBroker, "publish", PROFILE_PARTS[4])
    timers.wrap_sync(TranscriptBroker, "publish_batch", PROFILE_PARTS[4])

    for conversation in plan[:3]:  # warm-up (first predictions build TensorFlow graphs)
        sender = f"bench-profile-warm-{uuid.uuid4().hex[:8]}"
        for turn in conversation.turns:
            await agent.handle_message(UserMessage(turn, CollectingOutputChannel(), sender, input_channel="rest"))
    timers.totals.clear()
    per_action.clear()
    total = 0.0
    count = 0
    for conversation in plan:
        sender = f"bench-profile-{conversation.id}-{uuid.uuid4().hex[:8]}"
        for turn in conversation.turns:
            begin = time.perf_counter()
            with timers.part(PROFILE_PARTS[5]):
                await agent.handle_message(UserMessage(turn, CollectingOutputChannel(), sender, input_channel="rest"))
            total += time.perf_counter() - begin
            count += 1
    per_message = {name: round(timers.totals.get(name, 0.0) * 1000 / count, 2) for name in PROFILE_PARTS}
    actions = {name: {"calls": len(times), "median_ms": round(percentile([t * 1000 for t in times], 50), 1)}
               for name, times in sorted(per_action.items())}
    return {"messages": count, "model_load_s": round(load_s, 2), "ms_per_message": per_message,
            "total_ms_per_message": round(total * 1000 / count, 2), "remote_actions": actions}


def profile_in_process(model: Path, stack: Any, endpoints_file: Path, plan: Sequence[Conversation]) -> dict:
    """Load the agent here, with the running stack's endpoints, and time one message at a time."""
    import logging

    from rasa.utils.common import configure_logging_and_warnings

    from rasa.utils.log_utils import configure_structlog

    from bot.stack import own_database

    configure_logging_and_warnings(logging.WARNING)
    configure_structlog(logging.WARNING)
    with own_database(stack.database_url, endpoints_file.parent):
        return asyncio.run(_profile(model, stack, endpoints_file, plan))


# --- one model --------------------------------------------------------------------------------
@dataclass
class Options:
    levels: tuple[int, ...] = DEFAULT_LEVELS
    messages: int = 0  # per level; 0: a default that grows with the concurrency
    parse_samples: int = 120
    profile_messages: int = 50
    out: Path = DEFAULT_OUT
    stock: bool = True
    stock_epochs: int | None = DEFAULT_STOCK_EPOCHS
    tracker: str = "sql"  # "sql" (as deployed) or "memory" (lever: the tracker store's cost)
    profile: bool = True
    levers: tuple[str, ...] = ()  # bench-only experiments (bench/levers/sitecustomize.py)
    servers: tuple[int, ...] = (1, 2)  # Rasa servers behind nginx, on PostgreSQL and Redis (); () skips it
    server_levels: tuple[int, ...] = (8, 32)
    env: dict = field(default_factory=dict)


def messages_for(level: int, options: Options) -> int:
    return options.messages or min(320, max(60, 20 * level))


STOCK_BROKER = "bot.integrations.rasa_broker.TranscriptBroker"  # the transcript broker without our Rasa speed-ups


@contextmanager
def stock_rasa_endpoints() -> Iterator[None]:
    """The stock anchor runs Rasa as shipped: Rasa's SQL tracker store on the same database, the plain
    transcript broker (one transaction per message), the same action server, no speed-ups."""
    from bot import stack

    original = stack.write_endpoints

    def write_endpoints(path: Path, *args, **kwargs) -> Path:
        original(path, *args, **kwargs)
        endpoints = yaml.safe_load(path.read_text(encoding="utf-8"))
        endpoints["event_broker"]["type"] = STOCK_BROKER
        if "tracker_store" in endpoints:  # Rasa's own SQL tracker store (ours caches conversations)
            endpoints["tracker_store"]["type"] = "SQL"
        path.write_text(yaml.safe_dump(endpoints, sort_keys=False), encoding="utf-8")
        return path

    stack.write_endpoints = write_endpoints
    try:
        yield
    finally:
        stack.write_endpoints = original


def bench_model(name: str, model: Path, options: Options, corpus: Sequence[Conversation], log=print) -> dict:
    if name == "stock":
        with stock_rasa_endpoints():
            return _bench_model(name, model, options, corpus, log)
    return _bench_model(name, model, options, corpus, log)


def _bench_model(name: str, model: Path, options: Options, corpus: Sequence[Conversation], log=print) -> dict:
    from bot import stack as stack_module

    var_dir = options.out / name
    var_dir.mkdir(parents=True, exist_ok=True)
    database = var_dir / "bench.db"
    for stale in var_dir.glob("bench.db*"):
        stale.unlink()
    database_url = f"sqlite:///{database}"
    result: dict[str, Any] = {"model": str(model), "levels": {}}
    env = {"GUICHET_VAR_DIR": str(var_dir), **options.env}
    if options.levers:  # Python imports bench/levers/sitecustomize.py first in both servers
        env.update(GUICHET_BENCH_LEVERS=",".join(options.levers),
                   PYTHONPATH=os.pathsep.join([str(BENCH_DIR / "levers"), str(PROJECT_ROOT)]))
    started = time.monotonic()
    with stack_module.running_stack(model, database_url, var_dir, **env) as stack:
        result["stack_start_s"] = round(time.monotonic() - started, 1)
        endpoints_file = var_dir / f"endpoints-{stack.rasa_port}.yml"
        if options.tracker == "memory":
            # Lever: no SQL tracker store (conversations lost on restart: measured, not shipped).
            stack_module.write_endpoints(endpoints_file, stack.action_port, database_url, persist_tracker=False)
            stack.restart_rasa()
        log(f"[{name}] stack ready in {result['stack_start_s']} s (Rasa {stack.rasa_url}); warming up...")
        asyncio.run(drive(stack.rest_url, mix(corpus, 20, seed=99), 2, f"{name}-warm"))
        for level in options.levels:
            plan = mix(corpus, messages_for(level, options), seed=level)
            processes = {"rasa": stack.rasa.pid, "action_server": stack.action.pid, "load_generator": os.getpid()}
            def reading() -> dict:  # the load generator is this process alone (the stack is its child)
                return {key: cpu_seconds(pid, with_children=key != "load_generator") for key, pid in processes.items()}

            before = reading()
            figures = asyncio.run(drive(stack.rest_url, plan, level, f"{name}-{level}"))
            figures["cpu_ms_per_msg"] = cpu_per_message(before, reading(), figures["messages"])
            result["levels"][str(level)] = figures
            log(f"[{name}] {level:>2} at once: {figures['msg_per_s']:6.1f} msg/s  p50 {figures['p50_ms']:6.0f} ms  "
                f"p95 {figures['p95_ms']:6.0f} ms  p99 {figures['p99_ms']:6.0f} ms  ({figures['messages']} messages, "
                f"{figures['errors']} errors)")
        result["parse"] = asyncio.run(parse_floor(stack.rasa_url, unique_messages(corpus), options.parse_samples))
        log(f"[{name}] /model/parse alone: p50 {result['parse']['p50_ms']:.0f} ms  p95 {result['parse']['p95_ms']:.0f} ms")
        if options.profile:
            plan = mix(corpus, options.profile_messages, seed=7)
            profile = profile_in_process(model, stack, endpoints_file, plan)
            result["profile"] = profile
            result["model_load_s"] = profile["model_load_s"]
            log(f"[{name}] profile: {profile['total_ms_per_message']:.0f} ms a message in-process; "
                f"model load {profile['model_load_s']:.1f} s")
        result["rss_peak_mb"] = {"rasa": vm_hwm_mb(stack.rasa.pid), "action_server": vm_hwm_mb(stack.action.pid)}
        log(f"[{name}] peak RSS: Rasa {result['rss_peak_mb']['rasa']} MB, "
            f"action server {result['rss_peak_mb']['action_server']} MB")
    return result


def bench_servers(model: Path, options: Options, corpus: Sequence[Conversation], log=print) -> dict:
    """Our model on PostgreSQL and Redis behind nginx (``bot.cluster``) with 1, then 2 Rasa servers
    (2 action servers each time): messages/s, latency and CPU ms a message at each level, so the
    scaling can be read off on this machine's cores."""
    from bot.cluster import running_cluster, throwaway_postgres

    results: dict[str, Any] = {}
    with throwaway_postgres() as url:
        for count in options.servers:
            var_dir = options.out / f"servers-{count}"
            started = time.monotonic()
            with running_cluster(model, url, var_dir, rasa_count=count, action_count=2, staff_count=0,
                                 webchat_count=0, open311_count=0, extra_env=dict(options.env)) as cluster:
                result: dict[str, Any] = {"start_s": round(time.monotonic() - started, 1), "levels": {}}
                rest_url = f"{cluster.proxy_url}/webhooks/rest/webhook"
                asyncio.run(drive(rest_url, mix(corpus, 20, seed=99), 2, f"servers{count}-warm"))
                for level in options.server_levels:
                    plan = mix(corpus, messages_for(level, options), seed=level)
                    parts = {part.name: part.process.pid for part in cluster.rasa + cluster.actions}
                    before = {name: cpu_seconds(pid) for name, pid in parts.items()}
                    figures = asyncio.run(drive(rest_url, plan, level, f"servers{count}-{level}"))
                    cpu = cpu_per_message(before, {name: cpu_seconds(pid) for name, pid in parts.items()},
                                          figures["messages"])
                    figures["cpu_ms_per_msg"] = {
                        "rasa": round(sum(v or 0 for k, v in cpu.items() if k.startswith("rasa")), 1),
                        "action_servers": round(sum(v or 0 for k, v in cpu.items() if k.startswith("actions")), 1)}
                    result["levels"][str(level)] = figures
                    log(f"[{count} Rasa server(s)] {level:>2} at once: {figures['msg_per_s']:6.1f} msg/s  "
                        f"p50 {figures['p50_ms']:6.0f} ms  p95 {figures['p95_ms']:6.0f} ms  CPU {figures['cpu_ms_per_msg']}"
                        f"  ({figures['messages']} messages, {figures['errors']} errors)")
            results[str(count)] = result
    return results


# --- the whole run ----------------------------------------------------------------------------
def run(options: Options, log=print) -> dict:
    begin = time.monotonic()
    options.out.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus()
    report: dict[str, Any] = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs",
        "load_start": load_average(),
        "commit": _git_commit(),
        "options": {"levels": list(options.levels), "messages": {str(lv): messages_for(lv, options) for lv in options.levels},
                    "stock_epochs": options.stock_epochs, "tracker": options.tracker, "levers": list(options.levers)},
        "runs": {},
    }
    trainings = [plan_training("ours", PROJECT_ROOT / "config.yml", options.out, None)]
    if options.stock:
        trainings.append(plan_training("stock", STOCK_CONFIG, options.out, options.stock_epochs))
    # A first run trains both side by side (2 cores: the 15-minute budget); later runs reuse them.
    models = train_all(trainings, log)
    # Stock first: its in-process profile must run before our speed-ups get installed in this process.
    for name in sorted(models, key=lambda n: n != "stock"):
        model, training_s, cached, side_by_side = models[name]
        result = bench_model(name, model, options, corpus, log)
        result.update(training_s=training_s, training_cached=cached, training_side_by_side=side_by_side)
        report["runs"][name] = result
    if "stock" in report["runs"]:
        report["ratios"] = compare(report["runs"]["ours"], report["runs"]["stock"])
    if options.servers:
        report["servers"] = bench_servers(models["ours"][0], options, corpus, log)
    report["load_end"] = load_average()
    report["total_s"] = round(time.monotonic() - begin, 1)
    write_report(report, options.out)
    return report


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    stamp = report["started"].replace(":", "").replace("-", "")
    json_text = json.dumps(report, ensure_ascii=False, indent=2)
    (out / f"bench-{stamp}.json").write_text(json_text, encoding="utf-8")
    latest_json = out / "latest.json"
    latest_json.write_text(json_text, encoding="utf-8")
    latest_md = out / "latest.md"
    latest_md.write_text(render_markdown(report), encoding="utf-8")
    return latest_json, latest_md


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def parse_levels(text: str) -> tuple[int, ...]:
    levels = tuple(int(part) for part in text.split(",") if part.strip())
    if not levels or any(level < 1 for level in levels):
        raise ValueError(f"levels must be positive integers: {text!r}")
    return levels


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default=",".join(map(str, DEFAULT_LEVELS)), help="concurrent conversations, e.g. 1,8,32")
    parser.add_argument("--messages", type=int, default=0, help="messages per level (default: 20 x level, 60..320)")
    parser.add_argument("--no-stock", action="store_true", help="only our model (no stock anchor)")
    parser.add_argument("--stock-epochs", type=int, default=DEFAULT_STOCK_EPOCHS,
                        help="epoch cap of the stock anchor's DIET/TED/UnexpecTED/ResponseSelector (0: Rasa's 100)")
    parser.add_argument("--tracker", choices=("sql", "memory"), default="sql", help="tracker store (lever)")
    parser.add_argument("--parse-samples", type=int, default=120, help="/model/parse requests")
    parser.add_argument("--no-profile", action="store_true", help="skip the in-process profile")
    parser.add_argument("--profile-messages", type=int, default=50, help="messages of the in-process profile")
    parser.add_argument("--lever", action="append", default=[], choices=("sqlite-pool", "sqlite-normal"),
                        help="bench-only experiment in the servers (bench/levers/sitecustomize.py); repeatable")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--servers", default="1,2",
                        help="Rasa servers behind nginx on PostgreSQL + Redis, e.g. 1,2 (\"\" or 0 skips it)")
    args = parser.parse_args(argv)
    options = Options(levels=parse_levels(args.levels), messages=args.messages, out=args.out, stock=not args.no_stock,
                      stock_epochs=args.stock_epochs or None, tracker=args.tracker, profile=not args.no_profile,
                      parse_samples=args.parse_samples, profile_messages=args.profile_messages,
                      levers=tuple(args.lever),
                      servers=tuple(n for n in parse_levels(args.servers) if n > 0) if args.servers.strip("0, ") else ())
    if options.levers:  # the in-process profile gets the same experiments as the servers
        import runpy

        os.environ["GUICHET_BENCH_LEVERS"] = ",".join(options.levers)
        runpy.run_path(str(BENCH_DIR / "levers" / "sitecustomize.py"))
    report = run(options)
    print()
    print(render_markdown(report), end="")
    print(f"Figures: {options.out / 'latest.json'} and {options.out / 'latest.md'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
