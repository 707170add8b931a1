"""The reverse proxy in front of several servers: an nginx configuration, written from a template.

One public port (``listen``) shares the traffic out, request by request (round robin), so two
messages of one conversation may reach two Rasa servers — the shared lock store makes them wait
for each other (``bot.integrations.lock_store``):

- ``/webhooks/`` → the Rasa servers (REST channel, gateways' posts; ``/webhooks/meta`` → the Meta
  gateways); a Rasa server that dies mid-message is skipped and the message re-sent to another
  (``proxy_next_upstream ... non_idempotent``): safe because the REST channel is idempotent by
  ``message_id`` (every gateway sends one) and a ticket is opened once per citizen message;
- ``/chat/`` → the website chat servers, ``/open311/`` → the Open311 API, ``/`` → the staff web
  (the client's address is passed on in ``X-Forwarded-For`` for the login limits);
- a second, loopback-only port (``actions_listen``) shares the Rasa servers' calls among the
  action servers: Rasa knows one action endpoint, the proxy's.

Used by ``guichet stack`` (``bot.cluster``); the same file, with the addresses changed, serves a
deployment on several machines (README "Several servers").
"""
from __future__ import annotations

import os
from pathlib import Path
from string import Template

TEMPLATE = Template("""\
# Written by guichet stack (bot/proxy.py): nginx in front of $summary.
$user_line
worker_processes $workers;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 4096; }

http {
    access_log off;
    client_body_temp_path $work/tmp/body;
    proxy_temp_path $work/tmp/proxy;
    fastcgi_temp_path $work/tmp/fastcgi;
    uwsgi_temp_path $work/tmp/uwsgi;
    scgi_temp_path $work/tmp/scgi;
    client_max_body_size 6m;  # a photo of 5 MB sent to the website chat
    client_body_buffer_size 1m;  # messages stay in memory; only photos reach the temp folder
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $$host;
    proxy_set_header X-Forwarded-For $$proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $$scheme;
    proxy_read_timeout 180s;  # a message may wait for its conversation's lock (up to 120 s)
    proxy_connect_timeout 30s;  # a busy server's accept queue: wait, never fail a message for it

$upstreams
    server {
        listen $listen;
        location /webhooks/meta {
            proxy_pass http://guichet_meta;
        }
        location /webhooks/ {
            proxy_pass http://guichet_rasa;
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
        }
        location /chat/ {
            proxy_pass http://guichet_webchat;
            proxy_buffering off;  # long polling for the staff's replies
        }
        location /open311/ {
            proxy_pass http://guichet_open311;
        }
        location / {
            proxy_pass http://guichet_staff;
        }
    }

    server {
        listen $actions_listen;
        location / {
            proxy_pass http://guichet_actions;
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
        }
    }
}
""")


def upstream(name: str, addresses: list[str]) -> str:
    """An upstream block; with no server, one that answers 502 at once (a part not started)."""
    # max_fails=0: a slow server is never taken out (that turned a burst into "no live upstreams");
    # a dead one refuses connections at once and the next server is tried.
    servers = "".join(f"        server {address} max_fails=0;\n" for address in addresses)
    if not servers:
        servers = "        server 127.0.0.1:9 down;\n"
    # Idle connections kept open to the servers, closed before Sanic's own 5 s keep-alive ends (else
    # a request sent on a connection the server is closing fails).
    return f"    upstream {name} {{\n{servers}        keepalive 256;\n        keepalive_timeout 4s;\n    }}\n"


def write_config(path: Path, work_dir: Path, listen: str, actions_listen: str, *, rasa: list[str],
                 actions: list[str], staff: list[str] = (), webchat: list[str] = (), open311: list[str] = (),
                 meta: list[str] = (), workers: int = 1) -> Path:
    """Write nginx.conf for these addresses ("127.0.0.1:5005"...); returns its path."""
    for folder in ("logs", "tmp"):
        (work_dir / folder).mkdir(parents=True, exist_ok=True)
    user_line = ""
    if os.geteuid() == 0:  # nginx started as root runs its workers as "nobody": they write the temp folder
        import pwd

        account = pwd.getpwnam("nobody")
        for folder in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (work_dir / "tmp" / folder).mkdir(exist_ok=True)
            os.chown(work_dir / "tmp" / folder, account.pw_uid, account.pw_gid)
        os.chown(work_dir / "tmp", account.pw_uid, account.pw_gid)
        user_line = "user nobody nogroup;"
    upstreams = "".join(upstream(name, list(addresses)) for name, addresses in (
        ("guichet_rasa", rasa), ("guichet_actions", actions), ("guichet_staff", staff),
        ("guichet_webchat", webchat), ("guichet_open311", open311), ("guichet_meta", meta)))
    summary = f"{len(rasa)} Rasa server(s), {len(actions)} action server(s), {len(staff)} staff web process(es)"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE.substitute(summary=summary, user_line=user_line, workers=workers, work=work_dir, upstreams=upstreams,
                                        listen=listen, actions_listen=actions_listen), encoding="utf-8")
    return path
