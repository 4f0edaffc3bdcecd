"""The report's markup: escaping untrusted text, and the small pieces every section is built of.

`esc` is the only way text enters the page; markup made here is wrapped in `Html`, the only thing
`esc` passes through unchanged, so a value can never become markup by accident.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

import distill.report.plots as plots

#: Characters of one text shown before it is cut (the record files hold all of it).
CLIP = 2000


class Html(str):
    """Markup built by this module: the one kind of string `esc` does not escape."""


def esc(value: Any) -> str:
    """`value` as HTML text: escaped (quotes too, so it is safe in attributes), and clipped."""
    if isinstance(value, Html):
        return value
    text = "" if value is None else str(value)
    if len(text) > CLIP:
        text = f"{text[:CLIP]}… ({len(text) - CLIP} more characters)"
    return html.escape(text, quote=True)


def num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Iterable[int] = ()) -> Html:
    """A table of escaped cells; columns in `numeric` are right-aligned and formatted as numbers."""
    right = set(numeric)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = [
            f'<td class="n">{esc(num(v))}</td>'
            if i in right and not isinstance(v, Html)
            else f'<td class="n">{v}</td>'
            if i in right
            else f"<td>{esc(v)}</td>"
            for i, v in enumerate(row)
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def pre(text: Any) -> Html:
    return Html(f"<pre>{esc(text)}</pre>")


def empty(text: str) -> Html:
    return Html(f'<p class="empty">{esc(text)}</p>')


def img(b64: str | None, alt: str) -> Html:
    return Html(f'<img alt="{esc(alt)}" src="data:image/png;base64,{b64}">') if b64 else Html("")


def plot(draw: Any, alt: str, *args: Any) -> Html:
    """A plot, or nothing when matplotlib is missing (the tables carry the same numbers)."""
    if not plots.available():
        return Html("")
    return img(draw(*args), alt)


def bars(title: str, rows: Sequence[tuple[str, Sequence[tuple[int, str, str]], str]]) -> Html:
    """Horizontal bar chart in HTML and CSS: one row per label, stacked (count, colour, name)
    segments, the row's text at its end. For counts a table also lists: crisp at any zoom,
    searchable, and no plotting library to import for a report of data alone."""
    if not rows:
        return Html("")
    top = max(sum(n for n, _, _ in segs) for _, segs, _ in rows) or 1
    lines = []
    for label, segs, text in rows:
        spans = "".join(
            f'<span style="width:{100 * n / top:.2f}%;background:{colour}" title="{esc(name)}: {n}"></span>'
            for n, colour, name in segs
            if n
        )
        lines.append(
            f'<div class="bar"><span class="bar-label" title="{esc(label)}">{esc(label)}</span>'
            f'<span class="bar-track">{spans}<em>{esc(text)}</em></span></div>'
        )
    legend = {(colour, name) for _, segs, _ in rows for _, colour, name in segs}
    keys = "".join(
        f'<span><i style="background:{colour}"></i>{esc(name)}</span>' for colour, name in sorted(legend, key=str)
    )
    return Html(
        f'<figure class="bars" aria-label="{esc(title)}"><figcaption>{esc(title)}'
        f'<span class="legend">{keys}</span></figcaption>{"".join(lines)}</figure>'
    )


def no_plots_note() -> Html:
    return Html("" if plots.available() else str(empty("plots need matplotlib: pip install 'distill[report]'")))


def section(id: str, title: str, *parts: str) -> str:
    return f'<section id="{id}"><h2>{esc(title)}</h2>\n' + "\n".join(parts) + "\n</section>"
