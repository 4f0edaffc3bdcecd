"""How an API teacher's limits are shared by its replicas (a stage with `executor: ray`).

Every limit in the options is a total for the teacher, whatever runs it: N replicas together
keep at most `concurrency` requests in flight, send at most `requests_per_minute`, and spend at
most `max_total_tokens` / `max_cost_usd`. Rates and in-flight requests are split evenly (the
core gives every replica an equal share of each batch). Spend caps are split over what is left:
every replica keeps its own spend in `state/<teacher>/replica-<i>/`, and replica i may spend
what it already spent plus 1/N of the cap minus everything spent so far (by the teacher run
locally and by every replica, under any earlier actor count), so a resumed run keeps counting
however many actors it uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.errors import PluginError
from distill_plugins.teachers._api_support import Budget


def share(total: int, index: int, count: int) -> int:
    size, extra = divmod(total, count)
    return size + (1 if index < extra else 0)


def replica_options(options: Any, index: int, count: int, state_dir: Path | None, name: str) -> Any:
    if options.concurrency < count:
        raise PluginError(
            f"{name} teacher: concurrency {options.concurrency} cannot be shared by {count} Ray actors "
            f"(each needs at least one request in flight); raise `concurrency` or lower `ray.actors`"
        )
    update: dict[str, Any] = {"concurrency": share(options.concurrency, index, count)}
    for key in ("requests_per_minute", "tokens_per_minute"):
        if getattr(options, key) is not None:
            update[key] = getattr(options, key) / count
    if options.max_total_tokens is not None or options.max_cost_usd is not None:
        spent = [_spent(state_dir)] if state_dir is not None else []
        if state_dir is not None and state_dir.is_dir():
            spent += [_spent(d) for d in sorted(state_dir.glob("replica-*")) if d.is_dir()]
        own = _spent(state_dir / f"replica-{index}") if state_dir is not None else None
        if options.max_total_tokens is not None:
            used = sum(s.total_tokens for s in spent)
            mine = own.total_tokens if own else 0
            update["max_total_tokens"] = mine + max(0, options.max_total_tokens - used) // count
        if options.max_cost_usd is not None:
            used_usd = sum(s.cost_usd for s in spent)
            mine_usd = own.cost_usd if own else 0.0
            update["max_cost_usd"] = mine_usd + max(0.0, options.max_cost_usd - used_usd) / count
    return options.model_copy(update=update, deep=True)


def _spent(folder: Path) -> Any:
    return Budget(folder).spent
