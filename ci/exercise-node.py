"""Drives one node through every message type, so that its /metrics shows every
metric family a healthy node can record (used by ci/check-live-metrics.sh).

    python exercise-node.py ws://127.0.0.1:PORT/ws traffic
    python exercise-node.py ws://127.0.0.1:PORT/ws login-fails   # after the users table is gone

Needs the `websockets` package (ci/requirements.txt). The node should run with a
short AUTH_TIMEOUT_SECS (1-2 s): one connection here never authenticates and
waits to be closed by the server.
"""

from __future__ import annotations

import json
import sys
import time
import uuid

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

PASSWORD = "securePassword123"


def request(ws, kind: str, payload=None) -> dict:
    message = {"type": kind} if payload is None else {"type": kind, "payload": payload}
    ws.send(json.dumps(message))
    return json.loads(ws.recv(timeout=10))


def expect(reply: dict, kind: str, what: str) -> dict:
    if reply.get("type") != kind:
        raise SystemExit(f"exercise-node: {what}: expected {kind}, got {reply}")
    return reply


def traffic(url: str) -> None:
    name = f"ci_{uuid.uuid4().hex[:10]}"
    with connect(url) as ws:
        ws.send("not json")
        expect(json.loads(ws.recv(timeout=10)), "error", "bad frame")
        expect(request(ws, "count"), "error", "count before auth")
        expect(request(ws, "register", {"username": name, "password": PASSWORD}), "register_success", "register")
        expect(request(ws, "register", {"username": name, "password": PASSWORD}), "error", "duplicate register")
    with connect(url) as ws:
        expect(request(ws, "login", {"username": name, "password": "wrong-password"}), "auth_error", "bad password")
        expect(request(ws, "login", {"username": "x", "password": "y"}), "auth_error", "bad login format")
        token = expect(request(ws, "login", {"username": name, "password": PASSWORD}), "auth_success", "login")["payload"]["token"]
    with connect(url) as ws:
        expect(request(ws, "token_auth", {"token": "not-a-uuid"}), "auth_error", "bad token format")
        unknown = str(uuid.uuid4())
        expect(request(ws, "token_auth", {"token": unknown}), "auth_error", "unknown token (cache miss)")
        expect(request(ws, "token_auth", {"token": unknown}), "auth_error", "unknown token (negative hit)")
        expect(request(ws, "token_auth", {"token": token}), "auth_success", "token_auth")
        expect(request(ws, "set_username", f"{name}_x"), "display_name_updated", "set_username")
        expect(request(ws, "count"), "player_count", "count")
        expect(request(ws, "global_chat", "hello from ci"), "global_chat", "global_chat")
        ws.send(json.dumps({"type": "private_chat", "payload": {"target": f"{name}_x", "message": "psst"}}))
        expect(json.loads(ws.recv(timeout=10)), "private_chat", "private_chat to self")
        expect(request(ws, "no_such_type"), "error", "unknown type")
        expect(request(ws, "logout"), "logged_out", "logout")
    # A connection that never authenticates is closed by the server (AUTH_TIMEOUT_SECS).
    with connect(url) as ws:
        deadline = time.monotonic() + 15
        try:
            while time.monotonic() < deadline:
                ws.recv(timeout=deadline - time.monotonic())
        except ConnectionClosed:
            pass
        except TimeoutError:
            raise SystemExit("exercise-node: the server never closed an unauthenticated connection (AUTH_TIMEOUT_SECS?)")


def login_fails(url: str) -> None:
    with connect(url) as ws:
        reply = request(ws, "login", {"username": "ci_nobody", "password": PASSWORD})
        expect(reply, "auth_error", "login with PostgreSQL broken")


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[2] not in ("traffic", "login-fails"):
        print(__doc__, file=sys.stderr)
        return 2
    {"traffic": traffic, "login-fails": login_fails}[sys.argv[2]](sys.argv[1])
    print(f"exercise-node: {sys.argv[2]} done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
