"""`distill review`'s web server: a page over one stage's records, and the one route that writes.

The standard library's threaded HTTP server is enough for a few people on one machine, and
keeps the tool free of a web framework. What a framework would add is done here explicitly,
because a page that shows model output to a person who then clicks is an attack surface:

- record text only ever reaches the page as JSON and is put on screen as text; the page has
  no inline script, and a Content-Security-Policy forbids every other source;
- nothing changes on GET; the one write (POST /api/decisions) needs a per-server CSRF token
  that only the page itself can read, a JSON body, and no foreign `Origin`;
- the Host header must name this server (a DNS-rebinding page cannot borrow it);
- bound anywhere but loopback it needs a token, printed once at start, which the first visit
  trades for an HttpOnly, SameSite=Strict cookie; without a token it refuses to start.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import secrets
import threading
from http import cookies
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from distill.errors import ConfigError
from distill.review.decisions import DecisionLog, decisions_path, parse_decision
from distill.review.view import StageRecords

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
COOKIE = "distill_review"
STATIC = {"review.js": "text/javascript", "review.css": "text/css"}
MAX_BODY = 1 << 20


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ReviewServer:
    """The page, its records and its decisions file. `start()` serves on a thread; `serve()` blocks."""

    def __init__(
        self,
        output: Path,
        stage: str,
        *,
        reviewer: str,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        require_token: bool | None = None,
    ) -> None:
        loopback = is_loopback(host)
        need = (not loopback) if require_token is None else require_token
        if not loopback and not need:
            raise ConfigError(
                f"refusing to serve the review page on {host} (not a loopback address) without a token: "
                "anyone who can reach it could read the records and record decisions"
            )
        self.output, self.stage, self.reviewer = Path(output), stage, reviewer
        self.records = StageRecords(self.output, stage)
        self.log = DecisionLog(decisions_path(self.output, stage))
        self.token = (token or secrets.token_urlsafe(24)) if need else None
        self.session = secrets.token_urlsafe(32)  # what the cookie holds once the token was shown
        self.csrf = secrets.token_urlsafe(32)
        self._httpd = ThreadingHTTPServer((host, port), _handler(self))
        self._httpd.daemon_threads = True
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        base = f"http://{host}:{self.port}/"
        return f"{base}?token={self.token}" if self.token else base

    def allowed_hosts(self) -> set[str]:
        names = {self.host, "127.0.0.1", "localhost", "[::1]"} if is_loopback(self.host) else {self.host}
        return {f"{n}:{self.port}" for n in names}

    def start(self) -> ReviewServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="distill-review", daemon=True)
        self._thread.start()
        return self

    def serve(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def page(self) -> bytes:
        template = resources.files("distill.review").joinpath("static/review.html").read_text(encoding="utf-8")
        return (
            template.replace("{{csrf}}", html.escape(self.csrf, quote=True))
            .replace("{{stage}}", html.escape(self.stage, quote=True))
            .replace("{{reviewer}}", html.escape(self.reviewer, quote=True))
            .encode("utf-8")
        )


def _handler(server: ReviewServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        owner = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    owner: ReviewServer
    protocol_version = "HTTP/1.1"
    server_version = "distill-review"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # the CLI prints what matters
        pass

    # -- checks --------------------------------------------------------------------------

    def _host_ok(self) -> bool:
        return self.headers.get("Host", "") in self.owner.allowed_hosts()

    def _authorised(self) -> bool:
        if self.owner.token is None:
            return True
        jar = cookies.SimpleCookie(self.headers.get("Cookie", ""))
        held = jar[COOKIE].value if COOKIE in jar else ""
        return hmac.compare_digest(held, self.owner.session)

    def _origin_ok(self) -> bool:
        origin = self.headers.get("Origin")
        if origin is None:
            return True
        parts = urlsplit(origin)
        return parts.scheme == "http" and parts.netloc in self.owner.allowed_hosts()

    # -- routes --------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._host_ok():
            return self._text(421, "this server does not answer for that host name")
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path == "/" and self.owner.token is not None and "token" in query:
            return self._trade_token(query["token"][0])
        if not self._authorised():
            return self._text(401, "open the address with the token `distill review` printed")
        if parts.path == "/":
            return self._send(200, self.owner.page(), "text/html; charset=utf-8")
        if parts.path.startswith("/static/") and parts.path[8:] in STATIC:
            name = parts.path[8:]
            data = resources.files("distill.review").joinpath(f"static/{name}").read_bytes()
            return self._send(200, data, f"{STATIC[name]}; charset=utf-8")
        reviewer = (query.get("reviewer") or [self.owner.reviewer])[0][:64]
        if parts.path == "/api/records":
            self.owner.log.reload()
            return self._json(200, self.owner.records.summary(self.owner.log, reviewer))
        if parts.path.startswith("/api/records/"):
            detail = self.owner.records.detail(parts.path[13:], self.owner.log, reviewer)
            return self._json(200, detail) if detail else self._json(404, {"error": "no such record"})
        if parts.path == "/api/decisions":
            return self._json(405, {"error": "decisions are POSTed"}, allow="POST")
        self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        if not self._host_ok():
            return self._text(421, "this server does not answer for that host name")
        if not self._authorised():
            return self._json(401, {"error": "not signed in"})
        if urlsplit(self.path).path != "/api/decisions":
            return self._json(404, {"error": "not found"})
        sent = self.headers.get("X-CSRF-Token", "")
        if not self._origin_ok() or not hmac.compare_digest(sent, self.owner.csrf):
            return self._json(403, {"error": "missing or wrong CSRF token"})
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self._json(415, {"error": "a decision is sent as application/json"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._json(413, {"error": "too large"})
        try:
            decision = parse_decision(self.rfile.read(length))
        except ValueError as exc:
            return self._json(400, {"error": str(exc)})
        if decision.record not in self.owner.records.index:
            return self._json(400, {"error": f"no record {decision.record!r} in stage {self.owner.stage!r}"})
        candidates = len(self.owner.records.records[self.owner.records.index[decision.record]].candidates)
        picked = [decision.candidate] if decision.candidate is not None else []
        if any(k >= candidates for k in [*picked, *(decision.ranking or [])]):
            return self._json(400, {"error": f"record {decision.record!r} has {candidates} candidates"})
        new = self.owner.log.append(decision)
        self._json(200, {"saved": True, "duplicate": not new, "id": decision.id})

    def do_PUT(self) -> None:
        self._json(405, {"error": "method not allowed"}, allow="GET, POST")

    do_DELETE = do_PATCH = do_PUT

    # -- replies -------------------------------------------------------------------------

    def _trade_token(self, given: str) -> None:
        if not hmac.compare_digest(given, self.owner.token or ""):
            return self._text(401, "wrong token")
        self.send_response(303)
        self.send_header("Location", "/")
        self.send_header("Set-Cookie", f"{COOKIE}={self.owner.session}; HttpOnly; SameSite=Strict; Path=/")
        self._common_headers()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _common_headers(self) -> None:
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")

    def _send(self, status: int, data: bytes, kind: str, allow: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        if allow:
            self.send_header("Allow", allow)
        self._common_headers()
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, payload: Any, allow: str | None = None) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), "application/json", allow)

    def _text(self, status: int, message: str) -> None:
        self._send(status, message.encode("utf-8"), "text/plain; charset=utf-8")
