"""Which `Host` headers `magi play` answers: its defence against DNS rebinding.

A page on any site can point a name it controls at 127.0.0.1 and then talk to the local server as a
same-origin page (its Origin matches its Host, so the Origin check alone lets it in). What gives it
away is the Host header: the attacker's name. So every HTTP request and WebSocket handshake must
name the address the server is bound to or `localhost` (any port); anything else is refused with
403 before it reaches a route. Bound to a wildcard address (0.0.0.0, ::), the server also answers IP
literals (a rebinding attack needs a name) and this machine's own host names.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Optional

log = logging.getLogger("magi.play")

WILDCARDS = ("0.0.0.0", "::", "")
MAX_LOGGED = 20  # distinct refused Host values logged per server; the rest are refused silently


def host_name(header: str) -> Optional[str]:
    """The name in a Host header, lower-case, without the port or a trailing dot:
    "LocalHost:8000" -> "localhost", "[::1]:8000" -> "::1". None when it is not one."""
    header = header.strip().lower()
    if header.startswith("["):  # an IPv6 literal, "[::1]:8000"
        end = header.find("]")
        rest = header[end + 1:]
        if end < 0 or (rest and not rest.startswith(":")):
            return None
        return header[1:end]
    name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    name = name.rstrip(".")
    return name or None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_names(bound: str) -> set[str]:
    """The host names a server bound to `bound` answers to (IP literals come on top for wildcards)."""
    names = {"localhost", bound.lower().strip("[]").rstrip(".")}
    if bound in WILDCARDS:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower(), "127.0.0.1", "::1"}
    return names - {""}


def host_allowed(header: Optional[str], bound: str) -> bool:
    """Whether a request whose Host header is `header` may reach a server bound to `bound`."""
    name = host_name(header or "")
    if name is None:
        return False
    return name in allowed_names(bound) or (bound in WILDCARDS and _is_ip(name))


class HostCheck:
    """ASGI middleware: HTTP requests with a foreign Host get 403; WebSocket handshakes are refused
    (the server answers 403) before the app accepts them. Refusals are logged (the first
    `MAX_LOGGED` distinct Host values)."""

    def __init__(self, app, bound: str = "127.0.0.1") -> None:
        self.app, self.bound = app, bound
        self.logged: set[str] = set()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope.get("headers", []) if k == b"host"]
        header = values[0].decode("latin-1") if len(values) == 1 else None  # none, or two: refused
        if host_allowed(header, self.bound):
            await self.app(scope, receive, send)
            return
        shown = repr(header[:80]) if header is not None else f"({len(values)} Host headers)"
        if len(self.logged) < MAX_LOGGED and shown not in self.logged:
            self.logged.add(shown)
            log.warning("refused a request for Host %s: this server answers to %s and localhost "
                        "(DNS-rebinding guard; `magi play --host NAME` serves another name)", shown, self.bound)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
        from starlette.responses import PlainTextResponse

        body = f"403: this server answers to the Host {self.bound} or localhost\n"  # the header is not echoed
        await PlainTextResponse(body, status_code=403, headers={"X-Content-Type-Options": "nosniff"})(
            scope, receive, send)
