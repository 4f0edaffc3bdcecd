"""The run report's plots: small matplotlib figures, returned as base64 PNG for `<img src="data:...">`.

matplotlib is imported inside each function (never at module level), so `import distill` stays
light and a machine without the `report` extra still gets a report, with tables and no plots.
Figures are drawn on an explicit Agg canvas rather than through `pyplot`: no global backend or
figure registry is touched, so writing a report from inside another program cannot open a
window or change that program's plotting state.
"""

from __future__ import annotations

import base64
import importlib.util
import io
from collections.abc import Sequence
from typing import Any

#: Colours by role: what a reader compares across plots (kept vs dropped; base vs teacher vs student).
KEPT, DROPPED = "#3b8a5a", "#c8553d"
CONTENDER_COLOURS = {"model": "#8a8f98", "teacher": "#3566a8", "student": "#d9822b"}
_CYCLE = ["#3566a8", "#d9822b", "#3b8a5a", "#8e5ba6", "#c8553d", "#5aa0a8"]


def available() -> bool:
    """Whether plots can be drawn (the `report` extra: matplotlib)."""
    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _integer_x(ax: Any) -> None:
    """Counts and trainer steps are whole numbers: no 2.25 ticks."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _encode(fig: Any) -> str:
    buf = io.BytesIO()
    # No Software/date metadata: the same run gives the same bytes.
    fig.savefig(buf, format="png", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _short(label: str, width: int = 48) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def loss_png(title: str, train: Sequence[tuple[float, float]], evaluation: Sequence[tuple[float, float]]) -> str:
    """One student step's loss against its trainer step; evaluation loss dashed when logged."""
    fig = _figure(5.2, 3.0)
    ax = fig.add_subplot()
    if train:
        ax.plot(
            [s for s, _ in train], [v for _, v in train], marker="o", markersize=3, color=_CYCLE[0], label="train loss"
        )
    if evaluation:
        ax.plot(
            [s for s, _ in evaluation],
            [v for _, v in evaluation],
            marker="s",
            markersize=3,
            linestyle="--",
            color=_CYCLE[1],
            label="eval loss",
        )
    ax.set_xlabel("trainer step")
    _integer_x(ax)
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(_short(title, 60), fontsize=10)
    return _encode(fig)


def metric_png(name: str, scores: Sequence[tuple[str, str, float]], higher_is_better: bool) -> str:
    """Bars of one metric, one per contender (name, kind, score), coloured by kind."""
    fig = _figure(4.8, 3.0)
    ax = fig.add_subplot()
    names = [_short(n, 20) for n, _, _ in scores]
    values = [v for _, _, v in scores]
    bars = ax.bar(names, values, color=[CONTENDER_COLOURS.get(k, _CYCLE[3]) for _, k, _ in scores])
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=8)
    ax.margins(y=0.15)
    ax.set_ylabel(_short(name, 30))
    ax.set_title(f"{_short(name, 40)} ({'higher' if higher_is_better else 'lower'} is better)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _encode(fig)
