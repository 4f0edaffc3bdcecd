"""A local OpenAI Files + Batches endpoint for testing the Batch API path with the real client.

It speaks the routes the `openai` client uses (`/v1/files`, `/v1/files/{id}/content`,
`/v1/batches`, `/v1/batches/{id}`, `/v1/batches/{id}/cancel`) and keeps what OpenAI keeps:
uploaded files, batches and their status, output and error files. A batch is answered by an
engine: `vllm_engine` runs vLLM's own batch runner (`vllm.entrypoints.openai.run_batch`,
which reads and writes the OpenAI batch file format) on a model folder; `stub_engine`
answers at once, for fast tests. Live `/v1/chat/completions` calls (the teacher retries a
batch's failures live) go to `live`, a function of the request body.

`hold()` keeps new batches `in_progress` until `release()`, so a test can kill its client
while a batch is pending. Every line an engine answered is counted by custom id
(`answered`), and every live call too: what a test compares to prove nothing was paid twice.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from servers import serve, shut

#: An engine: the input lines of a batch in, one output line per input line out.
Engine = Callable[[list[dict]], list[dict]]


def completion(body: dict, texts: list[str], prompt_tokens: int = 10, completion_tokens: int = 5) -> dict:
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "local"),
        "choices": [
            {"index": k, "message": {"role": "assistant", "content": t}, "finish_reason": "stop", "logprobs": None}
            for k, t in enumerate(texts)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens * len(texts),
            "total_tokens": prompt_tokens + completion_tokens * len(texts),
        },
    }


def stub_answer(body: dict) -> dict:
    """A deterministic chat completion for a request body: its last message and seed, echoed."""
    last = body["messages"][-1]["content"]
    n = int(body.get("n") or 1)
    return completion(body, [f"answer to {last!r} #{k} (seed {body.get('seed')})" for k in range(n)])


def stub_engine(fail_if: Callable[[dict], bool] = lambda body: False) -> Engine:
    """Answers every line with `stub_answer`, except those `fail_if` picks, which fail as a
    provider's do: a 500 in the error file."""

    def run(lines: list[dict]) -> list[dict]:
        out = []
        for line in lines:
            if fail_if(line["body"]):
                response = {"status_code": 500, "request_id": "r", "body": {"error": {"message": "engine overloaded"}}}
            else:
                response = {"status_code": 200, "request_id": "r", "body": stub_answer(line["body"])}
            out.append({"id": "batch_req", "custom_id": line["custom_id"], "response": response, "error": None})
        return out

    return run


def vllm_engine(model_dir: Path, served_name: str, log: Path | None = None) -> Engine:
    """vLLM's batch runner on `model_dir`, one process per batch (settings from ENVIRONMENT.md)."""

    def run(lines: list[dict]) -> list[dict]:
        with tempfile.TemporaryDirectory(prefix="vllm-batch-") as tmp:
            src, dst = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
            src.write_text("".join(json.dumps(line) + "\n" for line in lines))
            cmd = [
                sys.executable,
                "-m",
                "vllm.entrypoints.openai.run_batch",
                "-i",
                str(src),
                "-o",
                str(dst),
                "--model",
                str(model_dir),
                "--served-model-name",
                served_name,
                "--dtype",
                "float32",
                "--enforce-eager",
                "--max-model-len",
                "512",
                "--seed",
                "0",
                # A whole batch arrives at once; a prompt split over two steps (chunked prefill)
                # makes vLLM 0.32's CPU sampler fail every seeded request ("CPU Generator does
                # not use offset"). A token budget above the batch's prompts keeps them whole.
                "--max-num-batched-tokens",
                "65536",
            ]
            env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
            with open(log or os.devnull, "ab") as sink:
                subprocess.run(cmd, check=True, stdout=sink, stderr=subprocess.STDOUT, env=env, timeout=900)
            return [json.loads(x) for x in dst.read_text().splitlines() if x.strip()]

    return run


def post_chat(base_url: str) -> Callable[[dict], dict]:
    """Live requests answered by a real OpenAI-compatible server (a vLLM one)."""

    def call(body: dict) -> dict:
        request = urllib.request.Request(
            f"{base_url}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())

    return call


def server_engine(base_url: str, concurrency: int = 16) -> Engine:
    """A batch answered by the same server that answers live requests, `concurrency` lines at a
    time: live and batch mode then differ only in how requests travel, not in who answers."""
    call = post_chat(base_url)

    def one(line: dict) -> dict:
        try:
            response = {"status_code": 200, "request_id": "r", "body": call(line["body"])}
        except urllib.error.HTTPError as exc:
            response = {"status_code": exc.code, "request_id": "r", "body": {"error": {"message": str(exc)}}}
        return {"id": "batch_req", "custom_id": line["custom_id"], "response": response, "error": None}

    def run(lines: list[dict]) -> list[dict]:
        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(one, lines))

    return run


class BatchEndpoint:
    """The server; use as a context manager. Counters are read by tests after the fact."""

    def __init__(self, engine: Engine, live: Callable[[dict], dict] = stub_answer) -> None:
        self.engine, self.live = engine, live
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.answered: Counter[str] = Counter()  # custom id -> lines an engine answered
        self.live_calls = 0
        self.uploads = 0
        self.created = 0
        self.polls = 0  # status checks of a batch
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._held = threading.Event()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def hold(self) -> None:
        self._held.set()
        self._release.clear()

    def release(self) -> None:
        self._held.clear()
        self._release.set()

    def lines(self, file_id: str) -> list[dict]:
        return [json.loads(x) for x in self.files[file_id].decode().splitlines() if x.strip()]

    def __enter__(self) -> BatchEndpoint:
        endpoint = self

        class Handler(_Handler):
            owner = endpoint

        self._server = serve(Handler, "batch-endpoint")
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        server, self._server = self._server, None
        shut(server)

    # -- what the routes do ----------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}-{next(self._ids)}"

    def _file(self, data: bytes, purpose: str, filename: str) -> dict:
        file_id = self._new_id("file")
        with self._lock:
            self.files[file_id] = data
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }

    def _create_batch(self, body: dict) -> dict:
        if body.get("input_file_id") not in self.files:
            raise LookupError(f"no file {body.get('input_file_id')!r}")
        batch_id = self._new_id("batch")
        lines = self.lines(body["input_file_id"])
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"],
            "status": "validating",
            "created_at": int(time.time()),
            "metadata": body.get("metadata"),
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
        }
        with self._lock:
            self.batches[batch_id] = batch
            self.created += 1
        threading.Thread(target=self._process, args=(batch_id, lines), daemon=True).start()
        return batch

    def _process(self, batch_id: str, lines: list[dict]) -> None:
        batch = self.batches[batch_id]
        batch["status"] = "in_progress"
        batch["in_progress_at"] = int(time.time())
        if self._held.is_set():
            self._release.wait()
        try:
            results = self.engine(lines)
        except Exception as exc:
            batch.update(status="failed", errors={"object": "list", "data": [{"message": str(exc)}]})
            return
        ok = [r for r in results if (r.get("response") or {}).get("status_code") == 200 and not r.get("error")]
        bad = [r for r in results if r not in ok]
        with self._lock:
            self.answered.update(r["custom_id"] for r in results)
        for key, rows in (("output_file_id", ok), ("error_file_id", bad)):
            if rows:
                data = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[key] = self._file(data, "batch_output", f"{batch_id}-{key}.jsonl")["id"]
        batch["request_counts"] = {"total": len(lines), "completed": len(ok), "failed": len(bad)}
        batch.update(status="completed", completed_at=int(time.time()))


class _Handler(BaseHTTPRequestHandler):
    owner: BatchEndpoint
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path.removeprefix("/v1")
        owner = self.owner
        if path.startswith("/files/") and path.endswith("/content"):
            data = owner.files.get(path.split("/")[2])
            if data is None:
                return self._json(404, {"error": {"message": "no such file"}})
            return self._send(200, data, "application/octet-stream")
        if path.startswith("/batches/"):
            with owner._lock:
                owner.polls += 1
            batch = owner.batches.get(path.split("/")[2])
            return self._json(200, batch) if batch else self._json(404, {"error": {"message": "no such batch"}})
        if path == "/batches":
            limit = int(parse_qs(parts.query).get("limit", ["20"])[0])
            data = sorted(owner.batches.values(), key=lambda b: b["id"], reverse=True)[:limit]
            return self._json(200, {"object": "list", "data": data, "has_more": False})
        self._json(404, {"error": {"message": f"no route GET {path}"}})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path.removeprefix("/v1")
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        owner = self.owner
        try:
            if path == "/files":
                fields = _multipart(self.headers.get("Content-Type", ""), raw)
                with owner._lock:
                    owner.uploads += 1
                return self._json(200, owner._file(fields["file"], fields["purpose"].decode(), "batch.jsonl"))
            if path == "/batches":
                return self._json(200, owner._create_batch(json.loads(raw)))
            if path.startswith("/batches/") and path.endswith("/cancel"):
                batch = owner.batches[path.split("/")[2]]
                batch["status"] = "cancelled"
                return self._json(200, batch)
            if path == "/chat/completions":
                with owner._lock:
                    owner.live_calls += 1
                return self._json(200, owner.live(json.loads(raw)))
        except (LookupError, ValueError) as exc:
            return self._json(400, {"error": {"message": str(exc)}})
        self._json(404, {"error": {"message": f"no route POST {path}"}})

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, data: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _multipart(content_type: str, raw: bytes) -> dict[str, bytes]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    out: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        out[str(name)] = part.get_payload(decode=True) or b""
    return out
