"""Rendering a run's report (`distill.report.data.ReportData`) as one self-contained HTML page.

Everything a record, a config or a model name says is untrusted text: it goes through
`esc` (`html.escape`) on its way into the page, always. Markup made here is wrapped in `Html`,
the only thing `esc` passes through unchanged, so a value can never become markup by
accident. The page loads nothing (CSS inline, plots as data: URIs) and its Content-Security-
Policy forbids scripts, so it stays inert even opened from a downloaded folder.
"""

from __future__ import annotations

from pathlib import Path

import distill.report.plots as plots
from distill.io.store import as_dict, atomic_write
from distill.layout import REPORT_FILE
from distill.report.data import AuditEntry, ReportData, TrainingRun, gather
from distill.report.eval import evaluation_section
from distill.report.markup import Html, bars, empty, esc, no_plots_note, num, plot, pre, section, table

_TOP_REASONS = 15

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d232b;margin:0;background:#f6f7f9}
header,main{max-width:1100px;margin:0 auto;padding:0 20px}
header{padding-top:18px}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;border-bottom:2px solid #d5d9e0;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
figure.bars{margin:0;padding:8px 12px;background:#fff;border:1px solid #e3e6eb;flex:1 1 420px;font-size:12px}
figure.bars figcaption{font-weight:600;margin-bottom:6px}
.legend{font-weight:400;margin-left:12px}.legend span{margin-right:10px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:-1px}
.bar{display:flex;align-items:center;gap:8px;margin:3px 0}
.bar-label{flex:0 0 34%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;text-align:right}
.bar-track{flex:1;display:flex;align-items:center;min-width:0}
.bar-track span{display:block;height:14px;min-width:1px}.bar-track em{font-style:normal;padding-left:6px;white-space:nowrap}
section{background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:4px 18px 14px;margin:16px 0}
nav a{margin-right:14px;color:#3566a8}
table{border-collapse:collapse;margin:8px 0;font-size:13px;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #e1e4e8;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
td pre,article pre{white-space:pre-wrap;word-break:break-word;margin:0;font:12px/1.4 ui-monospace,monospace;max-width:620px}
img{max-width:100%;border:1px solid #eee;margin:6px 8px 6px 0}
.empty{color:#6a737d;font-style:italic}.problems{background:#fff5e6;border:1px solid #f0c36d;padding:8px 14px}
.verdict{font-weight:600;padding:1px 6px;border-radius:3px}
.cleared{background:#dcf2e3;color:#1e6b3a}.needs-acknowledgement{background:#fff1c2;color:#7a5b00}
.blocked,.unreadable{background:#fbdcd6;color:#8a1f0f}.unknown{background:#eee}
.best{font-weight:700}dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:6px 0}
dt{color:#57606a}dd{margin:0}article{border-top:1px solid #e1e4e8;padding-top:6px;margin-top:12px}
.plots{display:flex;flex-wrap:wrap;align-items:flex-start}
"""


def render(data: ReportData) -> str:
    """The whole page."""
    config = as_dict(data.run.get("config"))
    name = data.root.resolve().name
    meta = [
        ("output", str(data.root.resolve())),
        ("distill", data.run.get("distill_version", "?")),
        ("seed", config.get("seed", "–")),
        ("written", data.created),
    ]
    teachers = as_dict(config.get("teachers"))
    for key, t in teachers.items():
        t = as_dict(t)
        opts = as_dict(t.get("options"))
        meta.append((f"teacher {key}", f"{t.get('plugin', '?')}: {opts.get('model', '-')}"))
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in meta)
    ids = [
        ("funnel", "Data funnel"),
        ("training", "Training"),
        ("evaluation", "Evaluation"),
        ("audit", "Audit"),
        ("samples", "Samples"),
    ]
    nav = "".join(f'<a href="#{i}">{esc(t)}</a>' for i, t in ids)
    problems = (
        (
            '<div class="problems"><strong>Parts of this output could not be read:</strong><ul>'
            + "".join(f"<li>{esc(p)}</li>" for p in data.problems)
            + "</ul></div>"
        )
        if data.problems
        else ""
    )
    body = "\n".join(
        [
            _funnel(data),
            _training(data.training),
            evaluation_section(data.evaluations, data.ablation),
            _audit(data.audits),
            _samples(data),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">"
        f"<title>distill report: {esc(name)}</title><style>{_CSS}</style></head>\n<body><header>"
        f"<h1>distill run report: {esc(name)}</h1><dl>{dl}</dl><nav>{nav}</nav>{problems}</header>\n"
        f"<main>\n{body}\n</main></body></html>\n"
    )


def _funnel(data: ReportData) -> str:
    if not data.funnel:
        return section("funnel", "Data funnel", empty("no stage has committed output in this run"))
    rows = []
    for r in data.funnel:
        t = r.totals
        entered = t["in"] + t["generated"]
        status = ("complete" if r.complete else f"partial ({r.shards} shards)") + (
            "" if r.balanced else ", LOST RECORDS"
        )
        rows.append(
            [
                r.stage,
                r.kind,
                t["in"],
                t["generated"],
                t["kept"],
                t["rejected"],
                Html(f"{100 * t['kept'] / entered:.1f}%") if entered else Html("–"),
                status,
            ]
        )
    stages = table(
        ["stage", "kind", "in", "generated", "kept", "rejected", "kept of all", "status"], rows, numeric=range(2, 7)
    )
    reasons = [
        (r.stage, *_split(reason), n, r.totals["rejected"]) for r in data.funnel for reason, n in r.reasons.items()
    ]
    edits = [(r.stage, *_split(reason), n) for r in data.funnel for reason, n in r.edits.items()]
    top = sorted(reasons, key=lambda x: -x[3])[:_TOP_REASONS]
    charts = [
        bars(
            "records per stage",
            [
                (
                    r.stage,
                    [(r.totals["kept"], plots.KEPT, "kept"), (r.totals["rejected"], plots.DROPPED, "rejected")],
                    f"{r.totals['kept']}/{r.totals['kept'] + r.totals['rejected']}",
                )
                for r in data.funnel
            ],
        )
    ]
    if top:
        charts.append(
            bars(
                "why records were dropped",
                [
                    (f"{s} · {p}: {why}" if p else f"{s} · {why}", [(n, plots.DROPPED, "dropped")], str(n))
                    for s, p, why, n, _ in top
                ],
            )
        )
    parts = [Html('<div class="plots">' + "".join(charts) + "</div>")]
    parts += [stages, Html("<h3>Drop reasons</h3>")]
    if reasons:
        parts.append(
            table(
                ["stage", "plugin", "reason", "records", "share of the stage's drops"],
                [
                    (s, p or "–", why, n, Html(f"{100 * n / total:.1f}%") if total else Html("–"))
                    for s, p, why, n, total in reasons
                ],
                numeric=(3, 4),
            )
        )
    else:
        parts.append(empty("no record was dropped"))
    if edits:
        parts += [
            Html("<h3>Edits (records kept but changed)</h3>"),
            table(["stage", "plugin", "reason", "records"], edits, numeric=(3,)),
        ]
    return section("funnel", "Data funnel", *parts)


def _split(reason: str) -> tuple[str, str]:
    """`plugin: reason` as the manifests count them."""
    plugin, sep, why = reason.partition(": ")
    return (plugin, why) if sep else ("", reason)


_METRIC_COLUMNS = [
    ("first_loss", "first loss"),
    ("final_loss", "final loss"),
    ("train_loss", "mean train loss"),
    ("epoch", "epochs"),
    ("train_runtime", "runtime (s)"),
    ("num_tokens", "tokens"),
]


def _training(runs: list[TrainingRun]) -> str:
    if not runs:
        return section("training", "Training", empty("no training in this run"))
    curves = []
    for r in runs:
        title = f"{r.stage} / {r.step}" + (f" ({r.trainer})" if r.trainer else "")
        if r.train or r.evaluation:
            curves.append(plot(plots.loss_png, f"loss of {title}", title, r.train, r.evaluation))
    rows = []
    for r in runs:
        shown = {k for k, _ in _METRIC_COLUMNS}
        other = ", ".join(f"{k}={num(v)}" for k, v in sorted(r.metrics.items()) if k not in shown)
        rows.append(
            [
                r.stage,
                r.step,
                r.trainer or "–",
                r.global_step,
                *[r.metrics.get(k) for k, _ in _METRIC_COLUMNS],
                r.model or "–",
                r.license or "–",
                other or "–",
                r.folder,
            ]
        )
    parts = [
        Html('<div class="plots">' + "".join(curves) + "</div>"),
        no_plots_note(),
        "<h3>Final metrics</h3>",
        table(
            [
                "stage",
                "step",
                "trainer",
                "trainer steps",
                *[t for _, t in _METRIC_COLUMNS],
                "model",
                "license",
                "other metrics",
                "folder",
            ],
            rows,
            numeric=range(3, 4 + len(_METRIC_COLUMNS)),
        ),
    ]
    missing = [f"{r.stage} / {r.step}: {r.problem}" for r in runs if r.problem]
    missing += [f"{r.stage} / {r.step}: no loss was logged" for r in runs if not r.train and not r.problem]
    if missing:
        parts.append(Html("<ul>" + "".join(f"<li>{esc(m)}</li>" for m in missing) + "</ul>"))
    return section("training", "Training", *parts)


def _verdict(v: str) -> Html:
    cls = v if v in ("cleared", "needs-acknowledgement", "blocked", "unreadable") else "unknown"
    return Html(f'<span class="verdict {cls}">{esc(v)}</span>')


def _audit(entries: list[AuditEntry]) -> str:
    if not entries:
        return section("audit", "Audit", empty("no audit in this run (nothing was exported or trained)"))
    parts = [
        table(
            ["audited", "kind", "verdict", "effective license", "use", "records", "findings", "from"],
            [
                (
                    e.target,
                    e.kind,
                    _verdict(e.verdict),
                    e.license or "–",
                    e.use or "–",
                    e.records,
                    len(e.findings),
                    e.source,
                )
                for e in entries
            ],
            numeric=(5, 6),
        )
    ]
    for e in entries:
        parts.append(Html(f"<h3>{esc(e.kind)} {esc(e.target)}: {_verdict(e.verdict)}</h3>"))
        if e.summary:
            parts.append(Html(f"<p>{esc(e.summary)}. {esc(e.explanation)}</p>"))
        if e.note:
            parts.append(Html(f"<p><em>{esc(e.note)}</em></p>"))
        if e.findings:
            parts.append(
                table(
                    ["severity", "rule", "license", "records", "examples", "finding", "status"],
                    [
                        (
                            f["severity"],
                            f["rule"],
                            f["license"] or "–",
                            f["records"],
                            ", ".join(f["examples"]) or "–",
                            f["message"] + (f" Fix: {f['fix']}." if f["fix"] else ""),
                            f["status"],
                        )
                        for f in e.findings
                    ],
                    numeric=(3,),
                )
            )
        elif e.verdict not in ("unreadable", "unknown"):
            parts.append(empty("no findings"))
    return section("audit", "Audit", *parts)


def _samples(data: ReportData) -> str:
    if not data.samples:
        return section("samples", "Samples", empty("no exported records in this run"))
    about = [f"format {data.samples_format}"] if data.samples_format else []
    about += [f"dataset license {data.samples_license}"] if data.samples_license else []
    parts = [
        Html(
            f"<p>The first {len(data.samples)} records of export {esc(data.samples_from)}"
            + (f" ({esc('; '.join(about))})" if about else "")
            + ", with their provenance.</p>"
        )
    ]
    for r in data.samples:
        p = r.provenance
        tag = p.license
        parts.append(
            Html(
                f"<article><h3>record {esc(r.id)}</h3><dl>"
                f"<dt>license tag</dt><dd>{esc(tag.expression)} (use: {esc(tag.use)}; attribution: "
                f"{'yes' if tag.attribution else 'no'}; share-alike: {'yes' if tag.share_alike else 'no'}"
                + (f"; restrictions: {esc(', '.join(tag.restrictions))}" if tag.restrictions else "")
                + (f"; unknown: {esc(', '.join(tag.unknown))}" if tag.unknown else "")
                + ")</dd></dl>"
                + table(["role", "content"], [(m.role, pre(m.content)) for m in r.messages])
                + (
                    (
                        "<h4>candidates</h4>"
                        + table(["score", "content"], [(c.score, pre(c.content)) for c in r.candidates], numeric=(0,))
                    )
                    if r.candidates
                    else ""
                )
                + "<h4>sources</h4>"
                + (
                    table(
                        ["dataset", "row", "license"], [(s.dataset, s.row, s.license) for s in p.sources], numeric=(1,)
                    )
                    if p.sources
                    else empty("none")
                )
                + "<h4>generators</h4>"
                + (
                    table(
                        ["role", "plugin", "model", "revision", "license", "sampling"],
                        [
                            (
                                g.role,
                                g.plugin,
                                g.model,
                                g.revision or "–",
                                g.license,
                                ", ".join(f"{k}={v}" for k, v in sorted(g.sampling.items())) or "–",
                            )
                            for g in p.generators
                        ],
                    )
                    if p.generators
                    else empty("none")
                )
                + "<h4>events</h4>"
                + table(
                    ["stage", "plugin", "action", "reason", "time"],
                    [
                        (e.stage, e.plugin or "–", e.action, e.reason or "–", e.time.isoformat(timespec="seconds"))
                        for e in p.events
                    ],
                )
                + "</article>"
            )
        )
    return section("samples", "Samples", *parts)


def write_report(out: Path) -> Path:
    """Write `out/report.html` and return its path; StoreError when `out` is not a run's output."""
    out = Path(out)
    path = out / REPORT_FILE
    atomic_write(path, render(gather(out)).encode("utf-8"))
    return path
