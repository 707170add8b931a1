"""The staff web interface: server-rendered pages for the CM and the service heads.

Every action is a plain HTML form (POST + redirect), so the whole desk works without JavaScript,
on a phone as on a desktop. ``create_app`` builds the Flask application, ``serve`` runs it.
"""
from bot.web.app import CHART_NAMES, create_app, serve
from bot.web.security import load_secret_key

__all__ = ["CHART_NAMES", "create_app", "load_secret_key", "serve"]
