"""The review server's security: escaping, CSP, no writes on GET, CSRF, Host and token checks."""

from __future__ import annotations

import http.client
import json
import re
import uuid

import pytest
from review_run import decide, ranked_fixture  # noqa: F401 (the `ranked` fixture)
from typer.testing import CliRunner

from distill.cli.app import app
from distill.errors import ConfigError
from distill.review.server import ReviewServer
from distill.review.view import StageRecords


@pytest.fixture
def server(ranked):
    _, out = ranked
    s = ReviewServer(out, "ranked", reviewer="ann").start()
    yield s
    s.stop()


def call(s: ReviewServer, method: str, path: str, body: object = None, **headers: str):
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    headers.setdefault("Host", f"127.0.0.1:{s.port}")
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response, payload


def decision(s: ReviewServer, **kw) -> dict:
    record = s.records.records[0].id
    return {"id": uuid.uuid4().hex, "record": record, "reviewer": "ann", "action": "accept", **kw}


def test_the_page_has_a_csp_and_no_record_text(server):
    response, page = call(server, "GET", "/")
    assert response.status == 200
    csp = response.getheader("Content-Security-Policy")
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert b"<script>" not in page.replace(b'<script src="/static/review.js" defer></script>', b"")
    assert not re.search(rb"<script>|\son\w+=", page)  # no inline script or handler
    for r in server.records.records[:3]:
        assert r.messages[0].content.encode() not in page  # records arrive as JSON only


def test_nothing_changes_on_get(server):
    response, _ = call(server, "GET", "/api/decisions?record=x&action=accept")
    assert response.status == 405 and not server.log.decisions
    for path in ("/", "/api/records", f"/api/records/{server.records.records[0].id}"):
        call(server, "GET", path)
    assert not server.log.path.exists()


def test_writes_need_the_csrf_token_json_and_no_foreign_origin(server):
    good = {"X-CSRF-Token": server.csrf}
    assert call(server, "POST", "/api/decisions", decision(server))[0].status == 403
    assert call(server, "POST", "/api/decisions", decision(server), **{"X-CSRF-Token": "guess"})[0].status == 403
    foreign = {**good, "Origin": "http://evil.example"}
    assert call(server, "POST", "/api/decisions", decision(server), **foreign)[0].status == 403
    form = {**good, "Content-Type": "application/x-www-form-urlencoded"}
    assert call(server, "POST", "/api/decisions", decision(server), **form)[0].status == 415
    assert not server.log.decisions
    d = decision(server)
    response, body = call(server, "POST", "/api/decisions", d, **good, Origin=f"http://127.0.0.1:{server.port}")
    assert response.status == 200 and json.loads(body) == {"saved": True, "duplicate": False, "id": d["id"]}
    assert json.loads(call(server, "POST", "/api/decisions", d, **good)[1])["duplicate"] is True
    assert len(server.log.decisions) == 1


def test_bad_decisions_are_refused_with_the_reason(server):
    good = {"X-CSRF-Token": server.csrf}
    response, body = call(server, "POST", "/api/decisions", decision(server, record="nope"), **good)
    assert response.status == 400 and "no record 'nope'" in json.loads(body)["error"]
    response, body = call(server, "POST", "/api/decisions", decision(server, action="choose", candidate=7), **good)
    assert response.status == 400 and "has 3 candidates" in json.loads(body)["error"]


def test_a_foreign_host_name_is_refused(server):
    """A DNS-rebinding page reaches 127.0.0.1 under its own name: the Host header gives it away."""
    response, _ = call(server, "GET", "/api/records", Host="evil.example")
    assert response.status == 421


def test_off_loopback_needs_a_token_traded_for_a_cookie(ranked):
    _, out = ranked
    with pytest.raises(ConfigError, match="without a token"):
        ReviewServer(out, "ranked", reviewer="ann", host="0.0.0.0", require_token=False)
    s = ReviewServer(out, "ranked", reviewer="ann", require_token=True).start()
    try:
        assert s.token and f"?token={s.token}" in s.url
        assert call(s, "GET", "/api/records")[0].status == 401
        assert call(s, "GET", "/?token=wrong")[0].status == 401
        response, _ = call(s, "GET", f"/?token={s.token}")
        cookie = response.getheader("Set-Cookie")
        assert response.status == 303 and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert s.token not in cookie  # the URL's token is not what the browser keeps
        jar = cookie.split(";")[0]
        assert call(s, "GET", "/api/records", Cookie=jar)[0].status == 200
        d = decision(s)
        assert call(s, "POST", "/api/decisions", d, **{"X-CSRF-Token": s.csrf})[0].status == 401
        assert call(s, "POST", "/api/decisions", d, **{"X-CSRF-Token": s.csrf, "Cookie": jar})[0].status == 200
    finally:
        s.stop()


def test_the_command_names_the_stages_and_prints_agreement(ranked):
    _, out = ranked
    result = CliRunner().invoke(app, ["review", str(out), "--stage", "nope"])
    assert result.exit_code != 0 and "stages with records: seeds, instructions, responses, ranked" in result.output
    rid = StageRecords(out, "ranked").records[0].id
    decide(out, rid, "ann", "accept")
    decide(out, rid, "bob", "reject", reason="no")
    result = CliRunner().invoke(app, ["review", str(out), "--agreement"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["verdict_agreement"] == 0.0
