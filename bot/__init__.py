"""Guichet: front-desk assistant for French local governments.

The domain modules (profile, hours, routing, tickets...) import neither Rasa nor Telegram.
"""
