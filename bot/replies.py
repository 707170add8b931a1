"""The assistant's French texts: Jinja2 templates kept in replies.fr.yml."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from jinja2 import Environment, StrictUndefined

if TYPE_CHECKING:
    from bot.profile import Profile


class Replies:
    def __init__(self, templates: dict[str, Any], base_context: dict[str, Any]):
        self._templates = templates
        self._env = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
        self._base = base_context

    def has(self, key: str) -> bool:
        try:
            self._lookup(key)
            return True
        except KeyError:
            return False

    def _lookup(self, key: str) -> str:
        node: Any = self._templates
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"no reply template {key!r}")
            node = node[part]
        if not isinstance(node, str):
            raise KeyError(f"reply {key!r} is not a template")
        return node

    def render(self, key: str, **context: Any) -> str:
        template = self._env.from_string(self._lookup(key))
        text = template.render(**{**self._base, **context})
        return " ".join(text.split())


    @classmethod
    def load(cls, path: str | Path, profile: "Profile") -> "Replies":
        """The reply templates of ``path``, with the town's facts available as ``town``."""
        return cls(_read_templates(str(path)), {"town": profile.town})


@lru_cache(maxsize=8)
def _read_templates(path: str) -> dict[str, Any]:
    with Path(path).open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)
