"""Real servers for API-teacher tests: a vLLM OpenAI-compatible server, a stub upstream with
a known latency, and a faulty proxy.

Both bind to 127.0.0.1 only and clean up after themselves: the vLLM server runs in its own
process group, which is terminated (then killed) however the test ends; the proxy shuts
down at the end of its `with` block, or by itself after `lifetime` seconds if a test leaks it.
The proxy forwards to the real server, so retried requests still get real completions, and
it injects the failures real APIs produce, at a seeded rate so a failing run can be replayed.
The stub (`StubUpstream`) answers after a fixed or seeded latency, so a schedule's ideal length
is known exactly: pacing tests and the back-off benchmark measure against it.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

SERVED_MODEL = "distill-tiny"
FAULT_KINDS = ("429", "500", "hang", "truncated", "nonjson")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer(NamedTuple):
    base_url: str
    model: str


def vllm_command(model_dir: Path, port: int, served_name: str = SERVED_MODEL, api_key: str | None = None) -> list[str]:
    """The command line that works on the project's CPUs (see ENVIRONMENT.md): fp32, eager.

    Whitespace between JSON tokens is disabled for structured output because a random tiny
    model, free to emit it, fills max_tokens with indentation and never closes the object.
    """
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "512",
        "--seed",
        "0",
        "--structured-outputs-config",
        json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
    ]
    if api_key:
        cmd += ["--api-key", api_key]
    return cmd


def _stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def vllm_server(
    model_dir: Path,
    *,
    served_name: str = SERVED_MODEL,
    api_key: str | None = None,
    startup_timeout: float = 300.0,
    warmup: bool = True,
) -> Iterator[VLLMServer]:
    """Start a vLLM API server on a free local port; yield once it answers (and is warm)."""
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            vllm_command(model_dir, port, served_name, api_key),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_ready(proc, base_url, api_key, startup_timeout, log_path)
        if warmup:  # the first request compiles kernels (~7 s on CPU); keep that out of timeouts
            _post(
                base_url,
                {"model": served_name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                api_key,
            )
        yield VLLMServer(base_url, served_name)
    finally:
        _stop_group(proc)
        log_path.unlink(missing_ok=True)


def _headers(api_key: str | None) -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    if api_key:
        h["Authorization"] = f"Bearer {api_key}"
    return h


def _post(base_url: str, body: dict, api_key: str | None, timeout: float = 120) -> dict:
    req = urllib.request.Request(
        f"{base_url}/chat/completions", data=json.dumps(body).encode(), headers=_headers(api_key), method="POST"
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _wait_ready(proc: subprocess.Popen, base_url: str, api_key: str | None, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"vLLM server exited with {proc.returncode} during start-up:\n{tail}")
        try:
            req = urllib.request.Request(f"{base_url}/models", headers=_headers(api_key))
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException):
            pass
        time.sleep(1.0)
    tail = log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"vLLM server not ready after {timeout:.0f} s:\n{tail}")


# -- the fault-injecting proxy ---------------------------------------------------------------


@dataclass
class ProxyStats:
    requests: int = 0
    forwarded: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    #: POSTs that carried `response_format` / an `n` above 1 (after any rewriting).
    with_response_format: int = 0
    with_n: int = 0

    def __post_init__(self) -> None:
        self.faults: Counter[str] = Counter()
        #: time.monotonic() when each forwarded answer came back / each injected 429 was sent:
        #: lets a test see whether other requests kept completing while some were refused.
        self.answered_at: list[float] = []
        self.refused_at: list[float] = []
        #: Seconds spent waiting on the upstream, summed over forwarded requests.
        self.upstream_seconds = 0.0

    @property
    def faults_injected(self) -> int:
        return sum(self.faults.values())


class FaultProxy:
    """An HTTP proxy to an OpenAI-compatible server that fails a share of POSTs on purpose.

    Faults, picked by a seeded RNG: `429` (with Retry-After, seconds or an HTTP date), `500`,
    `hang` (no answer for `hang_seconds`, then the connection drops), `truncated` (the body
    is cut short: either the connection closes before Content-Length is reached, or the
    Content-Length itself is short so the client reads half a JSON document), `nonjson` (200
    with an HTML page or with garbage labelled application/json). `require_key` makes it answer
    401 to any other key, echoing the key it was sent as some real servers do.

    Targeted refusals, on top of the seeded ones: `refuse_marker` answers 429 to the first
    attempt of each distinct request whose body contains the marker (its retries go through),
    and `refuse_first` answers 429 to the first N POSTs; with `refuse_marker` set, a refusal of a
    request carrying `delay_marker` is sent `delay_seconds` late. `limit_headers` are sent with every
    429, e.g. OpenAI's `x-ratelimit-remaining-requests: 0` for a shared limit that is spent;
    a `retry_after` of None sends no Retry-After header at all.
    """

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        kinds: tuple[str, ...] = FAULT_KINDS,
        seed: int = 0,
        hang_seconds: float = 3.0,
        retry_after: str | None = "0",
        require_key: str | None = None,
        reject_response_format: bool = False,
        ignore_n: bool = False,
        delay_marker: str | None = None,
        delay_seconds: float = 0.0,
        refuse_marker: str | None = None,
        refuse_first: int = 0,
        limit_headers: dict[str, str] | None = None,
        lifetime: float = 600.0,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.lifetime = lifetime
        self.configure(
            rate=rate,
            kinds=kinds,
            seed=seed,
            hang_seconds=hang_seconds,
            retry_after=retry_after,
            require_key=require_key,
            reject_response_format=reject_response_format,
            ignore_n=ignore_n,
            delay_marker=delay_marker,
            delay_seconds=delay_seconds,
            refuse_marker=refuse_marker,
            refuse_first=refuse_first,
            limit_headers=limit_headers,
        )
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._timer: threading.Timer | None = None
        self.stats = ProxyStats()

    def configure(
        self,
        *,
        rate: float = 0.0,
        kinds: tuple[str, ...] = FAULT_KINDS,
        seed: int = 0,
        hang_seconds: float = 3.0,
        retry_after: str | None = "0",
        require_key: str | None = None,
        reject_response_format: bool = False,
        ignore_n: bool = False,
        delay_marker: str | None = None,
        delay_seconds: float = 0.0,
        refuse_marker: str | None = None,
        refuse_first: int = 0,
        limit_headers: dict[str, str] | None = None,
    ) -> None:
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        self.rate, self.kinds, self.hang_seconds = rate, tuple(kinds), hang_seconds
        self.retry_after, self.require_key = retry_after, require_key
        self.reject_response_format, self.ignore_n = reject_response_format, ignore_n
        self.delay_marker, self.delay_seconds = delay_marker, delay_seconds
        self.refuse_marker, self.refuse_first = refuse_marker, refuse_first
        self.limit_headers = dict(limit_headers or {})
        self.rng = random.Random(seed)
        self._refused_bodies: set[bytes] = set()

    def reset_stats(self) -> ProxyStats:
        with self._lock:
            old, self.stats = self.stats, ProxyStats()
        return old

    @property
    def base_url(self) -> str:
        assert self._server is not None, "proxy not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = serve(Handler, "fault-proxy")
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._timer is not None:
            self._timer.cancel()
        server, self._server = self._server, None
        shut(server)

    def _pick_fault(self, body: bytes = b"") -> str | None:
        with self._lock:
            self.stats.requests += 1
            targeted = self.refuse_first > 0 or (
                self.refuse_marker is not None
                and self.refuse_marker.encode() in body
                and body not in self._refused_bodies
            )
            if targeted:
                self.refuse_first = max(0, self.refuse_first - 1)
                self._refused_bodies.add(body)
                self.stats.faults["429"] += 1
                return "429"
            if self.rate > 0 and self.rng.random() < self.rate:
                kind = self.rng.choice(self.kinds)
                self.stats.faults[kind] += 1
                return kind
            return None

    def _coin(self) -> bool:
        with self._lock:
            return self.rng.random() < 0.5

    def _enter(self) -> None:
        with self._lock:
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.stats.in_flight -= 1
            self.stats.forwarded += 1
            self.stats.answered_at.append(time.monotonic())


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A client that gave up (timeout, cancelled batch) closes its socket mid-answer: expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def serve(handler: type[BaseHTTPRequestHandler], name: str) -> ThreadingHTTPServer:
    """A threaded server for `handler` on a free 127.0.0.1 port, serving on a daemon thread."""
    server = _QuietServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


def shut(server: ThreadingHTTPServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._forward(b"")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        owner = self.owner
        if owner.require_key is not None:
            presented = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if presented != owner.require_key:
                with owner._lock:
                    owner.stats.requests += 1
                    owner.stats.faults["401"] += 1
                message = f"Incorrect API key provided: {presented}."
                return self._send(
                    401,
                    json.dumps(
                        {"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}
                    ).encode(),
                )
        body = self._rewrite(body)
        if owner.reject_response_format and b'"response_format"' in body:
            with owner._lock:
                owner.stats.requests += 1
            return self._send(
                400,
                b'{"error": {"message": "response_format is not supported by this server", '
                b'"type": "BadRequestError", "code": 400}}',
            )
        fault = owner._pick_fault(body)
        if fault == "429":
            if (
                owner.delay_marker is not None
                and owner.refuse_marker is not None
                and owner.delay_marker.encode() in body
            ):
                owner._stopping.wait(owner.delay_seconds)  # a refusal that arrives late
            extra = dict(owner.limit_headers)
            if owner.retry_after is not None:
                extra["Retry-After"] = self._retry_after()
            with owner._lock:
                owner.stats.refused_at.append(time.monotonic())
            return self._send(429, b'{"error": {"message": "Rate limit reached", "type": "rate_limit"}}', extra=extra)
        if fault == "500":
            return self._send(500, b'{"error": {"message": "internal error (injected)"}}')
        if fault == "hang":
            owner._stopping.wait(owner.hang_seconds)
            self.close_connection = True
            return
        if fault == "nonjson":
            if owner._coin():
                return self._send(200, b"<html><body>502 Bad Gateway</body></html>", ctype="text/html")
            return self._send(200, b'{"id": "chatcmpl-x", "choices": [ {{{ not json', ctype="application/json")
        self._forward(body, truncate=fault == "truncated")

    def _rewrite(self, body: bytes) -> bytes:
        owner = self.owner
        try:
            data = json.loads(body)
        except ValueError:
            return body
        if owner.ignore_n:
            data.pop("n", None)
        with owner._lock:
            owner.stats.with_response_format += "response_format" in data
            owner.stats.with_n += (data.get("n") or 1) > 1
        return json.dumps(data).encode()

    def _retry_after(self) -> str:
        value = self.owner.retry_after or "0"
        if value == "date":  # an HTTP date one second ahead (the client must parse dates too)
            return formatdate(time.time() + 1, usegmt=True)
        return value

    def _forward(self, body: bytes, truncate: bool = False) -> None:
        owner = self.owner
        owner._enter()
        try:
            if owner.delay_marker is not None and owner.delay_marker.encode() in body:
                owner._stopping.wait(owner.delay_seconds)
            sent = time.monotonic()
            conn = http.client.HTTPConnection(owner.upstream_host, owner.upstream_port, timeout=120)
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data, status, ctype = resp.read(), resp.status, resp.getheader("Content-Type", "application/json")
            conn.close()
            with owner._lock:
                owner.stats.upstream_seconds += time.monotonic() - sent
        except OSError as exc:
            return self._send(502, json.dumps({"error": {"message": f"proxy: upstream failed: {exc}"}}).encode())
        finally:
            owner._leave()
        if not truncate:
            return self._send(status, data, ctype=ctype)
        half = data[: max(1, len(data) // 2)]
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        # Either promise the whole body and hang up early, or promise only what is sent.
        self.send_header("Content-Length", str(len(data) if owner._coin() else len(half)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(half)
        self.wfile.flush()

    def _send(
        self, status: int, data: bytes, ctype: str = "application/json", extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


# -- a stub upstream with a known latency ----------------------------------------------------


class StubUpstream:
    """A minimal OpenAI-compatible server that answers every chat completion after a known delay.

    A real engine's latency varies with load and batching, so a schedule's ideal length can
    only be estimated against it; against this stub it is exact: `latency` seconds per answer
    (or a seeded uniform draw in `latency` ± `jitter`), plus nothing. It answers `/v1/models`
    and `/v1/chat/completions` (with `n` choices and usage), records the latency it served, and
    runs in threads, so concurrent requests overlap as they do on a real server.
    """

    def __init__(self, latency: float = 0.05, *, jitter: float = 0.0, seed: int = 0, model: str = SERVED_MODEL) -> None:
        self.latency, self.jitter, self.model = latency, jitter, model
        self.rng = random.Random(seed)
        self.answered = 0
        self.response_formats: list[dict] = []  # what requests asked for, when they asked
        self.latency_served = 0.0  # seconds of latency summed over the answers given
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "stub not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> StubUpstream:
        stub = self

        class Handler(_StubHandler):
            owner = stub

        self._server = serve(Handler, "stub-upstream")
        return self

    def __exit__(self, *exc: object) -> None:
        server, self._server = self._server, None
        shut(server)

    def _draw(self) -> float:
        with self._lock:
            if self.jitter <= 0:
                return self.latency
            return max(0.0, self.rng.uniform(self.latency - self.jitter, self.latency + self.jitter))

    def _served(self, seconds: float) -> None:
        with self._lock:
            self.answered += 1
            self.latency_served += seconds


def _stub_content(body: dict, k: int) -> str:
    """A structured-output request gets JSON with a string `answer` (odd samples break the
    schema: a number), as a server enforcing nothing might; any other request gets text."""
    if body.get("response_format"):
        return json.dumps({"answer": k} if k % 2 else {"answer": f"stub answer {k}"})
    return f"stub answer {k} (seed {body.get('seed')})"


class _StubHandler(BaseHTTPRequestHandler):
    owner: StubUpstream
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._json(200, {"object": "list", "data": [{"id": self.owner.model, "object": "model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if not self.path.endswith("/chat/completions"):
            return self._json(404, {"error": {"message": f"no route {self.path}"}})
        if body.get("response_format"):
            with self.owner._lock:
                self.owner.response_formats.append(body["response_format"])
        latency = self.owner._draw()
        time.sleep(latency)
        n = int(body.get("n") or 1)
        prompt = sum(len(str(m.get("content", ""))) // 4 + 4 for m in body.get("messages", []))
        choices = [
            {
                "index": k,
                "message": {"role": "assistant", "content": _stub_content(body, k)},
                "finish_reason": "stop",
                "logprobs": None,
            }
            for k in range(n)
        ]
        self.owner._served(latency)
        self._json(
            200,
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.owner.model,
                "choices": choices,
                "usage": {"prompt_tokens": prompt, "completion_tokens": 5 * n, "total_tokens": prompt + 5 * n},
            },
        )

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
