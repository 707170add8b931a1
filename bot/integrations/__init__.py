"""Adapters to Rasa (event broker, HTTP API). The domain never imports these."""
