"""The assistant on the town's website: an accessible chat window added with one script tag.

- ``static/``: ``guichet-chat.js`` and ``guichet-chat.css`` (no framework, no third-party CDN, no
  inline script: works under a strict CSP) and ``demo.html``, a demo town page;
- ``tokens``: the visitor tokens (signed, unguessable: the server chooses the conversation);
- ``server``: the aiohttp server under ``/chat/`` (the files, the demo, the visitors' API).

Run: ``python -m bot.channels.webchat`` (``guichet run`` starts it and prints the demo's address).
"""
