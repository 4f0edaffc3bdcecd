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


def no_plots_note() -> Html:
    return Html("" if plots.available() else str(empty("plots need matplotlib: pip install 'distill[report]'")))


def section(id: str, title: str, *parts: str) -> str:
    return f'<section id="{id}"><h2>{esc(title)}</h2>\n' + "\n".join(parts) + "\n</section>"
