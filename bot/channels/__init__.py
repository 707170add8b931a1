"""Citizen channels: the REST channel with the staff relay, and (later) Telegram."""
