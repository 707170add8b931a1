"""The town's Facebook page and Instagram account (Meta): private messages and public comments.

- ``webhook``: Meta's webhook contract (subscription check, ``X-Hub-Signature-256``, the events);
- ``graph``: the Graph API calls (Send API, private replies, comment replies) and Meta's errors;
- ``contacts``: who a conversation is with and Meta's 24-hour / 7-day messaging window;
- ``comments``: what the bot posts in public under a comment, from the assistant's reading;
- ``gateway``: the server that ties them to the assistant and delivers the staff's messages.

Run: ``python -m bot.channels.meta`` (``guichet run`` starts it when its settings are present).
"""
