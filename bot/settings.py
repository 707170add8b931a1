"""Runtime settings, read from environment variables (all optional)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    database_url: str
    profile_path: Path
    replies_path: Path
    model_dir: Path
    var_dir: Path
    rasa_url: str
    action_port: int
    rasa_port: int
    rasa_token: str | None
    trust_client_clock: bool


def _default_var_dir() -> Path:
    return Path(os.environ.get("GUICHET_VAR_DIR", PROJECT_ROOT / "var"))


def get_settings() -> Settings:
    var_dir = _default_var_dir()
    rasa_port = int(os.environ.get("GUICHET_RASA_PORT", "5005"))
    return Settings(
        database_url=os.environ.get("GUICHET_DATABASE_URL", f"sqlite:///{var_dir / 'guichet.db'}"),
        profile_path=Path(os.environ.get("GUICHET_PROFILE", PROJECT_ROOT / "collectivite.yml")),
        replies_path=Path(os.environ.get("GUICHET_REPLIES", PROJECT_ROOT / "bot" / "replies.fr.yml")),
        model_dir=Path(os.environ.get("GUICHET_MODEL_DIR", PROJECT_ROOT / "models")),
        var_dir=var_dir,
        rasa_url=os.environ.get("GUICHET_RASA_URL", f"http://127.0.0.1:{rasa_port}"),
        action_port=int(os.environ.get("GUICHET_ACTION_PORT", "5055")),
        rasa_port=rasa_port,
        rasa_token=os.environ.get("GUICHET_RASA_TOKEN") or None,
        # Only the evaluation harness sets this: lets a message's metadata carry the time "now".
        trust_client_clock=os.environ.get("GUICHET_TRUST_CLIENT_CLOCK") == "1",
    )
