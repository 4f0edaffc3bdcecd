"""`distill push` against a local server that answers the Hugging Face Hub endpoints the upload
uses (huggingface_hub itself, pointed at it with HF_ENDPOINT): a cleared export arrives with
exactly its data and cards; a blocked one, or one that needs an acknowledgement, uploads
nothing; the token never appears in what is printed."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from util import config_dict, pipeline

pytest.importorskip("huggingface_hub", reason="distill push needs huggingface_hub (pip install 'distill[hub]')")

TOKEN = "hf_canary" + "0123456789abcdef" * 2


class FakeHub(ThreadingHTTPServer):
    """The endpoints of create_repo and create_commit: repos/create, validate-yaml, preupload
    (every file "regular", so no LFS or Xet transfer), and the NDJSON commit."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.calls: list[str] = []
        self.repos: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.tokens: set[str] = set()
        self.branches: list[str] = []
        self.deleted: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.server.calls.append(f"GET {path}")
        if "/tree/" in path:  # list_repo_files: what the repository holds now
            files = [{"type": "file", "path": p, "size": len(b), "oid": "0" * 40} for p, b in self.server.files.items()]
            return self._send(200, files)  # type: ignore[arg-type]
        self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.calls.append(f"POST {self.path.split('?')[0]}")
        self.server.tokens.add(self.headers.get("authorization", ""))
        path = self.path.split("?")[0]
        if path == "/api/repos/create":
            repo = json.loads(body)
            self.server.repos.append(repo)
            prefix = "datasets/" if repo.get("type") == "dataset" else ""
            return self._send(200, {"url": f"{self.server.url}/{prefix}{repo['organization']}/{repo['name']}"})
        if path == "/api/validate-yaml":
            return self._send(200, {"errors": [], "warnings": []})
        if "/branch/" in path:
            self.server.branches.append(path.rsplit("/branch/", 1)[1])
            return self._send(200, {})
        if "/preupload/" in path:
            files = json.loads(body)["files"]
            return self._send(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        if "/commit/" in path:
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.server.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] == "deletedFile":
                    self.server.files.pop(item["value"]["path"], None)
                    self.server.deleted.append(item["value"]["path"])
            repo = path.removeprefix("/api/").split("/commit/")[0]  # datasets/ORG/NAME or models/ORG/NAME
            repo = repo.removeprefix("models/")
            return self._send(200, {"commitUrl": f"{self.server.url}/{repo}/commit/{'1' * 40}", "commitOid": "1" * 40})
        self._send(404, {"error": f"unknown endpoint {path}"})


@pytest.fixture
def hub():
    server = FakeHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _push(hub: FakeHub, *args: Any, cwd: Path, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HF_")},
        "HF_ENDPOINT": hub.url,
        **({"HF_TOKEN": token} if token else {}),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(cwd / "hf-home"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    return subprocess.run(
        [sys.executable, "-m", "distill.cli", "push", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def _export(tmp_path: Path, **teacher: Any) -> Path:
    cfg = config_dict(tmp_path)
    cfg["teachers"]["writer"]["options"].update(teacher)
    pipeline(cfg).run()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "out" / "export" / "sft"


def test_a_cleared_export_arrives_with_exactly_its_data_and_cards(tmp_path, hub):
    export = _export(tmp_path)
    r = _push(hub, export, "--repo", "acme/support-data", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [(x["organization"], x["name"], x["type"]) for x in hub.repos] == [("acme", "support-data", "dataset")]
    expected = {p.name for p in export.iterdir() if p.is_file()}
    assert set(hub.files) == expected
    assert {"README.md", "NOTICE", "croissant.json", "audit.json", "AUDIT.md"} <= expected
    assert any(name.startswith("data-") and name.endswith(".arrow") for name in expected)
    for name, data in hub.files.items():
        assert data == (export / name).read_bytes(), name
    assert "**Verdict: cleared**" in hub.files["README.md"].decode()
    assert hub.tokens == {f"Bearer {TOKEN}"}  # sent to the hub, and only there
    assert not [c for c in hub.calls if "/branch/" in c] and hub.deleted == []
    assert TOKEN not in r.stdout + r.stderr
    assert "uploaded" in r.stdout and "acme/support-data" in r.stdout
    # what arrived loads with `load_dataset`, as from the Hub: the card's `configs` name the data
    datasets = pytest.importorskip("datasets")
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    for name, data in hub.files.items():
        if name != "state.json":  # only a local folder is refused for holding it
            (downloaded / name).write_bytes(data)
    rows = datasets.load_dataset(str(downloaded), split="train")
    assert len(rows) == len(datasets.load_from_disk(str(export))) and "messages" in rows.column_names


def test_a_blocked_export_uploads_nothing(tmp_path, hub):
    export = _export(tmp_path, license="LicenseRef-Unspecified")
    r = _push(hub, export, "--repo", "acme/support-data", "--use", "research", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert hub.calls == [] and hub.files == {}
    assert "unknown-terms" in r.stdout and "nothing uploaded to acme/support-data" in r.stderr


def test_needs_acknowledgement_uploads_only_with_it_and_the_cards_record_it(tmp_path, hub):
    export = _export(tmp_path, license="LicenseRef-OpenAI-Terms")
    r = _push(hub, export, "--repo", "acme/support-data", cwd=tmp_path)
    assert r.returncode == 1 and hub.calls == [], r.stdout + r.stderr
    assert "no-competing-models" in r.stdout
    reason = "help-desk answers; reviewed by legal"
    r = _push(hub, export, "--repo", "acme/support-data", "--ack", f"no-competing-models={reason}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert reason in hub.files["AUDIT.md"].decode() and reason in hub.files["README.md"].decode()
    assert json.loads(hub.files["audit.json"])["acknowledgements"][0]["reason"] == reason


def test_a_dry_run_lists_the_files_and_uploads_nothing(tmp_path, hub):
    export = _export(tmp_path)
    r = _push(hub, export, "--repo", "acme/support-data", "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert hub.calls == [] and "dry run: would upload" in r.stdout and "croissant.json" in r.stdout


def test_a_whole_run_or_a_bad_repo_is_an_error_naming_what_to_push(tmp_path, hub):
    _export(tmp_path)
    r = _push(hub, tmp_path / "out", "--repo", "acme/x", cwd=tmp_path)
    assert r.returncode == 2 and "push one artefact at a time" in r.stderr and "export/sft" in r.stderr
    r = _push(hub, tmp_path / "out" / "export" / "sft", "--repo", "not a repo", cwd=tmp_path)
    assert r.returncode == 2 and "expected ORG/NAME" in r.stderr
    assert hub.calls == []


def test_a_hub_error_exits_2_without_the_token(tmp_path):
    export = _export(tmp_path)
    dead = FakeHub()
    dead.server_close()  # nothing listens there
    r = _push(dead, export, "--repo", "acme/support-data", cwd=tmp_path)
    assert r.returncode == 2 and "uploading to acme/support-data failed" in r.stderr
    assert TOKEN not in r.stdout + r.stderr


def test_a_students_upload_is_the_model_a_user_loads_not_distills_bookkeeping(tmp_path):
    from distill.audit.target import Target
    from distill.publish.hub import release_files

    folder = tmp_path / "dpo"
    for name in (
        "adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "chat_template.jinja", "README.md",
        "NOTICE", "audit.json", "AUDIT.md", "distill-model.json", "distill-train.json", "checkpoints/checkpoint-8/x",
        "merged/model.safetensors", ".lock", "model.safetensors.tmp",
    ):  # fmt: skip
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    target = Target(kind="student", root=folder, records=[], settings=None)  # type: ignore[arg-type]
    assert release_files(target) == [
        "AUDIT.md", "NOTICE", "README.md", "adapter_config.json", "adapter_model.safetensors", "audit.json",
        "chat_template.jinja", "tokenizer.json",
    ]  # fmt: skip


def test_a_push_replaces_what_an_earlier_push_left_and_commits_to_a_branch(tmp_path, hub):
    export = _export(tmp_path)
    hub.files["data-00001-of-00002.arrow"] = b"an old shard, never audited with this release"
    hub.files[".gitattributes"] = b"*.arrow filter=lfs"
    r = _push(hub, export, "--repo", "acme/support-data", "--revision", "v2", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert hub.branches == ["v2"] and hub.deleted == ["data-00001-of-00002.arrow"]
    assert set(hub.files) == {p.name for p in export.iterdir() if p.is_file()} | {".gitattributes"}
    assert "removed 1 files an earlier push left there" in r.stdout


def test_without_a_token_nothing_is_uploaded_and_the_error_says_how(tmp_path, hub):
    export = _export(tmp_path)
    r = _push(hub, export, "--repo", "acme/support-data", cwd=tmp_path, token=None)
    assert r.returncode == 2 and "no Hugging Face token: set HF_TOKEN" in r.stderr
    assert hub.calls == []
