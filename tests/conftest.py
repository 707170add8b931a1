"""Shared fixtures: a fresh SQLite database per test, the trained model, a running stack."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference"
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'tickets.db'}"


@pytest.fixture
def store(database_url):
    from bot.tickets import TicketStore

    return TicketStore(database_url)


@pytest.fixture
def profile():
    from bot.profile import load_profile

    return load_profile(ROOT / "collectivite.yml")


@pytest.fixture
def assistant(store, profile):
    from bot.assistant import Assistant
    from bot.hours import StaffHours
    from bot.replies import Replies, load_replies

    replies = Replies(load_replies(str(ROOT / "bot" / "replies.fr.yml"), ()), {"town": profile.town})
    return Assistant(profile, store, replies, StaffHours.from_town(profile.town))


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The trained model (trained here if `make test` did not already do it)."""
    from bot.stack import latest_model

    try:
        return latest_model(ROOT / "models")
    except FileNotFoundError:
        subprocess.run([str(Path(sys.executable).parent / "guichet"), "train"], cwd=ROOT, check=True)
        return latest_model(ROOT / "models")


@pytest.fixture(scope="module")
def stack(model_path, tmp_path_factory):
    """Action server + Rasa server on loopback, with their own SQLite database."""
    from bot.stack import running_stack

    var_dir = tmp_path_factory.mktemp("stack")
    url = f"sqlite:///{var_dir / 'guichet.db'}"
    with running_stack(model_path, url, var_dir) as running:
        yield running
