"""The run report: a real run's output folder rendered as one static HTML file, read back as
HTML, opened in a headless Chromium, and written by `distill report` and `distill run`.

Record text, config values and model names here carry `<script>` and `</section>`: the report
must show them as text, never as markup.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from util import QUESTIONS, chromium, config_dict, dump, pipeline, write_seeds

from distill.report.eval import _EvalFile, _worst
from distill.report.html import write_report

SECTIONS = ["funnel", "training", "evaluation", "audit", "samples"]
EVIL = "Why does <script>alert('owned')</script> end my </section> early?"
EVIL_MODEL = "<script>steal()</script>-7b"


class Page(HTMLParser):
    """A report as parsed HTML: per section, its table rows (cell texts), images and text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: Counter[str] = Counter()
        self.order: list[str] = []
        self.rows: dict[str, list[list[str]]] = {}
        self.imgs: dict[str, list[str]] = {}
        self.text: dict[str, str] = {}
        self.title = ""
        self._section: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_title = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags[tag] += 1
        a = dict(attrs)
        if tag == "section":
            self._section = a.get("id") or "?"
            self.order.append(self._section)
            self.rows[self._section], self.imgs[self._section], self.text[self._section] = [], [], ""
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img" and self._section:
            self.imgs[self._section].append(a.get("src") or "")
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._section:
            self.rows[self._section].append(self._row)
            self._row = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._section:
            self.text[self._section] += data
        if self._in_title:
            self.title += data


def _need_datasets() -> None:
    if importlib.util.find_spec("datasets") is None:
        pytest.skip("datasets not installed: export stages cannot run (pip install 'distill[datasets]')")


def _config(folder: Path) -> dict:
    """The core tests' echo-teacher pipeline, with seeds that a filter drops and markup in a record."""
    cfg = config_dict(folder)
    lines = [EVIL, *QUESTIONS, QUESTIONS[1], "Hi"]  # a duplicate and a one-word prompt get dropped
    write_seeds(folder, [json.dumps({"prompt": q}) for q in lines])
    cfg["stages"][2]["filters"][0]["options"]["field"] = "prompt"
    cfg["release"] = {"name": "acme-<b>support</b>"}
    return cfg


def write_eval(out: Path, stage: str = "evaluate", worst: bool = True) -> Path:
    """An `evaluate` stage's result file, in the format that stage writes."""
    data = {
        "stage": stage,
        "data": "eval/heldout.jsonl",
        "contenders": [
            {"name": "base", "kind": "model", "model": "embedded", "system_prompt": False},
            {"name": "teacher", "kind": "teacher", "model": EVIL_MODEL, "system_prompt": True},
            {"name": "student", "kind": "student", "model": "out/models/student/dpo", "system_prompt": False},
        ],
        "metrics": [
            {
                "evaluator": "rubric",
                "name": "rubric",
                "higher_is_better": True,
                "description": "answers start with the brand",
                "details": {},
                "scores": {"base": 0.125, "teacher": 0.45, "student": 0.875},
            },
            {
                "evaluator": "perplexity",
                "name": "perplexity",
                "higher_is_better": False,
                "details": {},
                "scores": {"base": 12.3, "student": 8.1},
            },
        ],
        "items": [
            {
                "id": f"e{i}",
                "prompt": f"question {i} </section><script>x()</script>",
                "reference": None,
                "tags": {"topic": "off" if i % 2 else "on"},
                "answers": {
                    "base": f"base answer {i}",
                    "teacher": f"teacher answer {i}",
                    "student": f"student answer {i} <img src=x onerror=alert(1)>",
                },
                "scores": {"rubric": {"base": 0.0, "teacher": 1.0, "student": [0.0, 1.0, 1.0, 0.5][i]}},
            }
            for i in range(4)
        ],
        "worst": {"rubric": {"student": ["e0", "e3"]}} if worst else {},
    }
    path = out / "eval" / stage / "eval.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def run_out(tmp_path_factory) -> Path:
    """A real run (echo teachers, filters, an sft export) with an evaluation result beside it."""
    _need_datasets()
    folder = tmp_path_factory.mktemp("report-run")
    pipeline(_config(folder)).run()
    out = folder / "out"
    write_eval(out)
    return out


def _manifest_totals(out: Path) -> dict[str, tuple[str, dict[str, int], dict[str, int]]]:
    found = {}
    for m in (out / "stages").glob("*/manifest.json"):
        data = json.loads(m.read_text())
        t = {
            k: sum(s.get(f, 0) for s in data["shards"])
            for k, f in (("in", "inputs"), ("generated", "generated"), ("kept", "kept"), ("rejected", "rejected"))
        }
        reasons: Counter[str] = Counter()
        for s in data["shards"]:
            reasons.update(s["reasons"])
        found[data["stage"]] = (data["kind"], t, dict(reasons))
    return found


def test_every_section_has_its_content_and_markup_stays_text(run_out):
    path = write_report(run_out)
    assert path == run_out / "report.html"
    raw = path.read_text(encoding="utf-8")
    page = Page(raw)
    assert page.order == SECTIONS
    # Escaped: no script element, no early end of a section, no injected attribute.
    assert page.tags["script"] == 0 and "<script" not in raw.lower()
    assert raw.count("</section>") == len(SECTIONS) and "<img src=x" not in raw
    assert "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in raw
    assert "://" not in "".join(page.imgs[s][i][:40] for s in SECTIONS for i in range(len(page.imgs[s])))

    # funnel: every stage's numbers and every drop reason, as the manifests count them
    manifests = _manifest_totals(run_out)
    rows = {r[0]: r for r in page.rows["funnel"] if len(r) == 8}
    for stage, (kind, t, _) in manifests.items():
        assert rows[stage][:6] == [
            stage,
            kind,
            str(t["in"]),
            str(t["generated"]),
            str(t["kept"]),
            str(t["rejected"]),
        ], stage
    drops = {(r[0], f"{r[1]}: {r[2]}"): int(r[3]) for r in page.rows["funnel"] if len(r) == 5 and r[3].isdigit()}
    expected = {(s, reason): n for s, (_, _, reasons) in manifests.items() for reason, n in reasons.items()}
    assert expected and drops == expected
    assert any("duplicate" in reason for _, reason in expected) and any("length" in r for _, r in expected)

    assert "no training in this run" in page.text["training"]

    # evaluation: contenders, scores, the best marked, the worst cases from the file
    ev = page.rows["evaluation"]
    assert ["teacher", "teacher", EVIL_MODEL, "yes", "as asked"] in ev
    assert ["rubric", "rubric", "higher", "answers start with the brand", "0.125", "0.45", "0.875"] in ev
    assert ["perplexity", "perplexity", "lower", "", "12.3", "–", "8.1"] in ev
    assert '<span class="best">0.875</span>' in raw and '<span class="best">8.1</span>' in raw
    worst = [r for r in ev if r[:2] == ["rubric", "student"]]
    assert [r[2] for r in worst] == ["e0", "e3"] and worst[1][6] == "0.5"
    assert worst[0][3] == "question 0 </section><script>x()</script>"  # shown as text
    assert worst[0][5] == "student answer 0 <img src=x onerror=alert(1)>"

    # audit: the export's verdict as its cards recorded it, with findings
    sidecar = json.loads((run_out / "export" / "sft" / "distill-dataset.json").read_text())
    audit_rows = [r for r in page.rows["audit"] if r[0] == "export/sft"]
    assert audit_rows and audit_rows[0][1] == "dataset" and audit_rows[0][2] == sidecar["audit"]["verdict"]
    assert audit_rows[0][3] == sidecar["license"] and int(audit_rows[0][6]) > 0
    assert any(r[:2] == ["info", "notices"] for r in page.rows["audit"])
    assert "acme-<b>support</b>" in page.text["audit"]  # a config value, as text

    # samples: the first exported records, with provenance and license tag
    text = page.text["samples"]
    assert "export sft" in text and EVIL in text and "CC0-1.0 AND Apache-2.0" in text
    assert ["acme-seeds", "1", "CC0-1.0"] in page.rows["samples"]
    assert any(r[:5] == ["generator", "echo", "echo-model", "v1", "Apache-2.0"] for r in page.rows["samples"])
    assert any(r[:3] == ["sft", "–", "kept"] for r in page.rows["samples"])
    assert text.count("record ") >= 3 and "exported as sft" in text


def test_plots_are_embedded_png_images(run_out):
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib not installed (pip install 'distill[report]'): the report has no plots")
    page = Page(write_report(run_out).read_text(encoding="utf-8"))
    assert not page.imgs["funnel"]  # HTML bars: a report of data alone imports no plotting library
    assert len(page.imgs["evaluation"]) == 2  # one per metric
    for src in page.imgs["evaluation"]:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_the_funnel_draws_html_bars_for_every_stage_and_reason(run_out):
    raw = write_report(run_out).read_text(encoding="utf-8")
    funnel = raw[raw.index('<section id="funnel">') : raw.index("</section>", raw.index('<section id="funnel">'))]
    assert funnel.count('<figure class="bars"') == 2  # records per stage, drop reasons
    stages = [row for row in Page(raw).rows["funnel"] if len(row) == 8 and row[4].isdigit()]
    assert len(stages) >= 3  # stage, kind, in, generated, kept, rejected, kept of all, status
    for row in stages:
        kept, rejected = int(row[4]), int(row[5])
        assert f"<em>{kept}/{kept + rejected}</em>" in funnel
    widths = [float(w) for w in re.findall(r'style="width:([0-9.]+)%', funnel)]
    assert widths and max(widths) <= 100.0 and all(w > 0 for w in widths)


def test_without_matplotlib_the_tables_stay(run_out, monkeypatch):
    from distill.report import plots as report_plots

    monkeypatch.setattr(report_plots, "available", lambda: False)
    page = Page(write_report(run_out).read_text(encoding="utf-8"))
    assert page.order == SECTIONS and not any(page.imgs.values())
    assert "plots need matplotlib" in page.text["evaluation"] and len(page.rows["funnel"]) > 3
    assert "plots need matplotlib" not in page.text["funnel"]  # its charts are HTML


def test_missing_and_unreadable_parts_are_named_not_fatal(run_out, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(run_out, out)
    (out / "eval" / "evaluate" / "eval.json").write_text('{"metrics": [{"scores": {}}]}')  # a metric without a name
    log = out / "models" / "student" / "sft" / "training_log.json"
    log.parent.mkdir(parents=True)
    log.write_text("{not json")
    page = Page(write_report(out).read_text(encoding="utf-8"))
    assert page.order == SECTIONS
    assert "eval/evaluate/eval.json cannot be read: metrics.0.name: Field required" in page.text["evaluation"]
    assert "student / sft: training_log.json: cannot be read" in page.text["training"]
    assert ["student", "sft", "–", "–"] == page.rows["training"][1][:4]
    assert "Parts of this output could not be read" in (out / "report.html").read_text()


def test_a_run_with_nothing_exported_says_so(tmp_path):
    _need_datasets()
    cfg = config_dict(tmp_path)
    cfg["stages"] = [
        {"kind": "filter", "filters": [{"plugin": "length", "options": {"min_words": 50}}]},
        {"kind": "export", "format": "sft"},
    ]
    pipeline(cfg).run()
    page = Page(write_report(tmp_path / "out").read_text(encoding="utf-8"))
    assert "no exported records in this run" in page.text["samples"]
    assert "no training in this run" in page.text["training"]
    assert "no evaluation in this run" in page.text["evaluation"]
    drops = [r for r in page.rows["funnel"] if len(r) == 5 and r[:2] == ["filter", "length"]]
    assert len(drops) == 1 and drops[0][3] == str(len(QUESTIONS)) and drops[0][4] == "100.0%"


def test_worst_cases_are_ranked_when_the_file_lists_none(tmp_path):
    write_eval(tmp_path, worst=False)
    ev = _EvalFile.model_validate_json((tmp_path / "eval" / "evaluate" / "eval.json").read_bytes())
    cases = _worst(ev)
    # rubric: the student (the only student contender) lowest first, ties in file order
    assert [(c.metric, c.contender, c.id, c.score) for c in cases] == [
        ("rubric", "student", "e0", 0.0),
        ("rubric", "student", "e3", 0.5),
        ("rubric", "student", "e1", 1.0),
        ("rubric", "student", "e2", 1.0),
    ]
    ev.metrics[0].higher_is_better = False  # then the highest scores are the worst
    assert [c.id for c in _worst(ev)][:2] == ["e1", "e2"]


@pytest.mark.slow  # starts a browser
def test_the_report_renders_in_headless_chromium(run_out, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip(
            "no chromium-headless-shell or chromium binary on PATH (scripts/install.sh installs "
            "chromium-headless-shell with apt, as root)"
        )
    path = write_report(run_out)
    source = Page(path.read_text(encoding="utf-8"))
    args = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    done = subprocess.run([*args, "--dump-dom", path.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = Page(done.stdout)
    assert dom.order == SECTIONS and dom.title.startswith("distill report")
    assert dom.tags["script"] == 0  # the browser parsed no script element out of record text
    assert {s: len(dom.imgs[s]) for s in SECTIONS} == {s: len(source.imgs[s]) for s in SECTIONS}
    assert EVIL in dom.text["samples"] and EVIL_MODEL in dom.text["evaluation"]
    assert dom.rows["funnel"] == source.rows["funnel"]
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [*args, f"--screenshot={shot}", "--window-size=1200,2400", path.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # a rendered page, not a blank one
    assert int.from_bytes(png[16:20], "big") == 1200


def distill(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_report_prints_the_path_and_refuses_other_folders(run_out, tmp_path):
    (run_out / "report.html").unlink(missing_ok=True)
    done = distill("report", str(run_out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(run_out / "report.html") and (run_out / "report.html").is_file()
    done = distill("report", str(tmp_path))
    assert done.returncode == 2
    assert "is not a distill output folder" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow  # runs the CLI pipeline in subprocesses
def test_run_writes_the_report_and_a_failure_to_is_only_a_warning(tmp_path):
    _need_datasets()
    seeds = write_seeds(tmp_path)
    cfg = {
        "output": "out",
        "cache": {"path": "requests.sqlite"},
        "seeds": [{"path": seeds.name, "license": "CC0-1.0"}],
        "stages": [
            {"kind": "filter", "filters": [{"plugin": "length", "options": {"min_words": 8}}]},
            {"kind": "export", "format": "sft"},
        ],
    }
    config = dump(tmp_path, cfg)
    done = distill("run", str(config), "--quiet")
    report = tmp_path / "out" / "report.html"
    assert done.returncode == 0, done.stderr
    assert f"report: {report}" in done.stdout and report.is_file()
    report.unlink()
    report.mkdir()  # cannot be written now
    done = distill("run", str(config), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "warning: could not write the report" in done.stderr
    assert not any(line.startswith("report:") for line in done.stdout.splitlines())


def test_report_modules_import_no_plotting_library():
    code = (
        "import sys, distill.report.data, distill.report.html, distill.report.plots, distill.report.eval, distill.cli.app\n"
        "print(','.join(m for m in ('matplotlib', 'torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


# ----------------------------------------------------------------------------- with a trained student


def _need_train() -> None:
    from conftest import require_ml

    require_ml()
    for module in ("trl", "peft", "datasets", "accelerate"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} not installed (pip install 'distill[train]')")


FAST = {"batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1, "save_steps": 100}


@pytest.mark.slow
def test_a_trained_student_has_curves_metrics_and_its_audit(tmp_path, tiny_model_dir):
    _need_train()
    cfg = _config(tmp_path)
    cfg["stages"] = cfg["stages"][:2] + [
        {
            "kind": "rank",
            "name": "rank",
            "ranker": {"plugin": "reward-function", "options": {"function": "reward_fns:prefers_short"}},
        },
        {"kind": "export", "name": "sft", "format": "sft"},
        {"kind": "export", "name": "prefs", "format": "preference"},
        {
            "kind": "train",
            "name": "student",
            "student": str(tiny_model_dir),
            "student_license": "Apache-2.0",
            "model_name": "acme-student",
            "steps": [
                {"trainer": "sft", "data": "sft", "options": {**FAST, "max_steps": 3}},
                {"trainer": "dpo", "data": ["prefs"], "options": {**FAST, "max_steps": 2, "lora": {"r": 4}}},
            ],
        },
    ]
    pipeline(cfg).run()
    out = tmp_path / "out"
    write_eval(out)
    page = Page(write_report(out).read_text(encoding="utf-8"))
    assert page.order == SECTIONS

    rows = {r[1]: r for r in page.rows["training"] if len(r) > 10 and r[0] == "student"}
    assert list(rows) == ["sft", "dpo"]  # in the config's order
    for step, steps in (("sft", 3), ("dpo", 2)):
        log = json.loads((out / "models" / "student" / step / "training_log.json").read_text())
        losses = [h["loss"] for h in log if "loss" in h]
        assert len(losses) == steps
        assert rows[step][2] == step and rows[step][3] == str(steps)
        assert rows[step][4] == f"{losses[0]:.4g}" and rows[step][5] == f"{losses[-1]:.4g}"
        assert rows[step][13] == f"models/student/{step}"
    assert rows["dpo"][10] == "acme-student"
    if importlib.util.find_spec("matplotlib") is not None:
        assert len(page.imgs["training"]) == 2  # one loss curve per step

    audit = json.loads((out / "models" / "student" / "dpo" / "audit.json").read_text())
    student = [r for r in page.rows["audit"] if r[0] == "models/student/dpo"]
    assert student and student[0][1] == "student" and student[0][2] == audit["verdict"]
    assert "models/student/dpo/audit.json" in student[0][7]
    assert {r[0] for r in page.rows["audit"] if r[1] == "dataset"} == {"export/sft", "export/prefs"}
    assert "export prefs" in page.text["samples"]  # the last export


def test_an_ablation_beside_the_run_is_shown_as_what_the_generated_data_added(run_out, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(run_out, out)
    arm = {"seeds": [0, 1, 2], "student_min": 0.7, "student_max": 0.9, "base_mean": 0.0}
    ablation = {
        "what": "the task trained two ways",
        "this_run": {"arm": "b", "seed": 1},
        "arms": [
            {**arm, "arm": "(a) seed-answers", "student_mean": 0.8, "training_rows_mean": {"human": 70, "teacher": 0}},
            {
                **arm,
                "arm": "(b) generated",
                "student_mean": 0.85,
                "teacher_as_it_wrote_the_data_mean": 0.3,
                "training_rows_mean": {"human": 0, "teacher": 50, "rule": 40},
            },
        ],
    }
    (out / "ablation.json").write_text(json.dumps(ablation))
    page = Page(write_report(out).read_text(encoding="utf-8"))
    assert "What the generated data added" in page.text["evaluation"]
    rows = [r for r in page.rows["evaluation"] if r and r[0].startswith("(")]
    assert rows[0][:3] == ["(a) seed-answers", "", "human 70"]
    assert rows[1][0] == "(b) generated (this run)" and rows[1][2] == "teacher 50, rule 40"
    assert rows[1][3] == "0.85 (0.7–0.9)" and rows[1][4] == "0.3"
    (out / "ablation.json").write_text('{"arms": [{"arm": "x"}]}')
    page = Page(write_report(out).read_text(encoding="utf-8"))
    assert "ablation.json cannot be read" in (out / "report.html").read_text()
