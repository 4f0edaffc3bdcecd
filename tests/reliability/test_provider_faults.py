"""Provider faults: whole pipelines through the `openai` teacher, a real vLLM server, and the
fault-injecting proxy of tests/servers.py, run as users run them (the `distill` CLI).

- 30% of requests fail (429 with Retry-After, 500, hangs past the timeout, truncated bodies,
  200s that are not JSON): the run completes and every record is accounted for. The API key is
  a canary that the proxy insists on (so it really is sent), and everything the run, inspect,
  audit and the cache commands write or print is searched for it.
- 100% of requests fail mid-run: the circuit breaker stops the run cleanly (exit 1, one line
  naming the cause, committed shards intact), and a later run with a healthy provider resumes
  and ends with the records of a run that never failed.
- A key the provider rejects: the run stops with a message that names the variable, never the
  key, though the provider echoes it back.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from .harness import check_output, child_env, distill, manifest, read_output, scan, scan_text, start_run, write_seeds

pytest.importorskip("openai")
pytestmark = pytest.mark.slow

SEEDS = 24


def _config(folder: Path, base_url: str, model: str, batch_size: int = 6, **options: Any) -> Path:
    seeds = write_seeds(folder, n=SEEDS)
    teacher = {
        "model": model,
        "base_url": base_url,
        "license": "Apache-2.0",
        "max_tokens": 12,
        "concurrency": 4,
        "timeout": 1.5,
        "backoff_base": 0.05,
        "backoff_max": 0.5,
        "max_retries": 8,
        "api_key_env": "OPENAI_API_KEY",
        **options,
    }
    cfg = {
        "output": "out",
        "seed": 5,
        "cache": {"path": "requests.sqlite"},
        "seeds": [{"path": seeds.name, "license": "CC0-1.0", "name": "acme"}],
        "teachers": {"api": {"plugin": "openai", "options": teacher}},
        "stages": [
            {
                "kind": "generate",
                "name": "answers",
                "teacher": "api",
                "batch_size": batch_size,
                "task": {"plugin": "response"},
            },
            {
                "kind": "filter",
                "name": "clean",
                "filters": [{"plugin": "length", "options": {"min_words": 1}}, "exact-dedup"],
            },
            {"kind": "export", "name": "sft", "format": "sft"},
        ],
        "release": {"use": "research"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(plugin_env, folder: Path, key: str) -> dict[str, str]:
    for d in ("home", "cache", "hf"):
        (folder / d).mkdir(exist_ok=True)
    env = child_env(
        plugin_env,
        OPENAI_API_KEY=key,
        HOME=str(folder / "home"),
        DISTILL_CACHE_DIR=str(folder / "cache"),
        HF_HOME=str(folder / "hf"),
    )
    env.pop("DISTILL_PLUGINS")  # every installed plugin, as a user has them
    return env


def _accounted(out: Path) -> dict[str, int]:
    """Every seed reached the export or was rejected with a reason, in every stage."""
    records = read_output(out)
    seeds_kept = len(records["seeds"][0])
    answers = records["answers"]
    assert len(answers[0]) + len(answers[1]) == seeds_kept
    clean = records["clean"]
    assert len(clean[0]) + len(clean[1]) == len(answers[0])
    sft = records["sft"]
    assert len(sft[0]) + len(sft[1]) == len(clean[0])
    assert all(r.provenance.events[-1].reason for r in answers[1] + clean[1] + sft[1])
    return {"seeds": seeds_kept, "answered": len(answers[0]), "exported": len(sft[0])}


@pytest.fixture(scope="module")
def reference(vllm_server, tmp_path_factory, plugin_env):
    """The pipeline through a healthy proxy: what the faulty runs must end up with."""
    from servers import FaultProxy

    base_url, model = vllm_server
    folder = tmp_path_factory.mktemp("api-reference")
    with FaultProxy(base_url) as proxy:
        config = _config(folder, proxy.base_url, model)
        r = distill("run", str(config), "--quiet", env=_env(plugin_env, folder, "sk-unused"))
        assert r.returncode == 0, r.stderr
    return read_output(folder / "out")


def _same_records(out: Path, want) -> Any:
    """None lost or duplicated compared with the healthy run. Texts are not compared: CPU
    kernels may round differently when retries regroup a batch."""
    check = check_output(out)
    got = read_output(out)
    for stage, (kept, rejected) in want.items():
        ids = [r.id for r in got[stage][0] + got[stage][1]]
        check.lost += len({r.id for r in kept + rejected} - set(ids))
    return check, got


def test_thirty_percent_faults_the_run_completes_and_the_key_leaks_nowhere(
    vllm_server, tmp_path, plugin_env, reference, figures
):
    from servers import FaultProxy

    base_url, model = vllm_server
    key = f"sk-canary-{secrets.token_hex(12)}"
    env = _env(plugin_env, tmp_path, key)
    printed: list[str] = []
    with FaultProxy(base_url, rate=0.3, seed=129, hang_seconds=2.5, retry_after="1", require_key=key) as proxy:
        config = _config(tmp_path, proxy.base_url, model)
        r = distill("run", str(config), env=env)
        printed += [r.stdout, r.stderr]
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        stats = proxy.stats
    for args in (
        ["inspect", str(tmp_path / "out")],
        ["inspect", str(tmp_path / "out"), "--json"],
        ["audit", str(tmp_path / "out"), "--format", "markdown"],
        ["cache", "stats", "--cache", str(tmp_path / "requests.sqlite")],
        ["cache", "explain", "--cache", str(tmp_path / "requests.sqlite")],
    ):
        c = distill(*args, env=env)
        assert "Traceback" not in c.stderr, (args, c.stderr)
        printed += [c.stdout, c.stderr]

    counts = _accounted(tmp_path / "out")
    check, _ = _same_records(tmp_path / "out", reference)
    files, hits = scan([tmp_path], key)
    hits += scan_text(printed, key)
    figures.add(
        faults_injected=stats.faults_injected,
        provider_requests=stats.requests,
        records_checked=check.records,
        lost=check.lost,
        duplicated=check.duplicated,
        secrets_found=len(hits),
        files_scanned=files,
        **{f"provider_fault_{k}": v for k, v in stats.faults.items()},
    )
    # Seed 129 draws every kind in its first dozen faults; concurrency may reorder a few.
    assert stats.faults_injected >= 5 and len(stats.faults) >= 4, stats.faults
    assert stats.faults.get("401", 0) == 0  # the key was sent with every request
    assert counts["answered"] == counts["seeds"] and counts["exported"] > 0, counts
    assert not check.problems and check.lost == 0 and check.duplicated == 0, check.problems
    assert not hits, hits


def test_total_failure_trips_the_breaker_cleanly_and_a_later_run_resumes(
    vllm_server, tmp_path, plugin_env, reference, figures
):
    from servers import FaultProxy

    base_url, model = vllm_server
    env = _env(plugin_env, tmp_path, "sk-unused")
    out = tmp_path / "out"
    with FaultProxy(base_url, delay_marker="messages", delay_seconds=0.3) as proxy:
        # Batches of 12 at 2 at a time: when the provider goes down, at most 2 requests of the
        # next batch are already through, so at least 3 in a row fail and the breaker opens.
        config = _config(
            tmp_path, proxy.base_url, model, batch_size=12, concurrency=2, circuit_breaker=3, max_retries=2
        )
        proc = start_run(config, env, tmp_path / "run.log")
        deadline = time.monotonic() + 120
        while (m := manifest(out, "answers")) is None or not m.shards:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.02)
        proxy.configure(rate=1.0, kinds=("500",))  # the provider goes down mid-run
        assert proc.wait(timeout=120) == 1
        failed = proxy.stats.faults_injected
        log = " ".join((tmp_path / "run.log").read_text().split())
        assert "Traceback" not in log and "error:" in log and "circuit breaker open after 3" in log, log
        assert "HTTP 500" in log
        committed = check_output(out, complete=False)
        assert not committed.problems and committed.duplicated == 0, committed.problems
        kept_before = read_output(out)["answers"]
        assert kept_before[0] and not manifest(out, "answers").complete

        proxy.configure(rate=0.0)  # it comes back
        r = distill("run", str(config), "--quiet", env=env)
        assert r.returncode == 0, r.stderr
        assert "resuming after" in r.stderr
    counts = _accounted(out)
    check, got = _same_records(out, reference)
    assert [x.id for x in got["answers"][0][: len(kept_before[0])]] == [x.id for x in kept_before[0]]
    figures.add(
        faults_injected=failed,
        records_checked=check.records,
        lost=check.lost,
        duplicated=check.duplicated,
        breaker_trips=1,
    )
    assert counts["answered"] == counts["seeds"], counts
    assert not check.problems and check.lost == 0 and check.duplicated == 0, check.problems


def test_a_rejected_key_stops_the_run_and_is_never_shown(vllm_server, tmp_path, plugin_env, figures):
    from servers import FaultProxy

    base_url, model = vllm_server
    key = f"sk-canary-{secrets.token_hex(12)}"
    env = _env(plugin_env, tmp_path, key)
    with FaultProxy(base_url, require_key="the-right-key") as proxy:  # answers 401, echoing the key sent
        config = _config(tmp_path, proxy.base_url, model)
        r = distill("run", str(config), env=env)
        assert proxy.stats.faults["401"] >= 1
    text = " ".join(r.stderr.split())
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "$OPENAI_API_KEY" in text and "401" in text, text
    files, hits = scan([tmp_path], key)
    hits += scan_text([r.stdout, r.stderr], key)
    figures.add(faults_injected=proxy.stats.faults["401"], secrets_found=len(hits), files_scanned=files)
    assert not hits, hits
