"""Which rows are compared with which, and the paired differences over matched seeds.

Linking rule (one rule for every way a budget can be set: `mask.keep_match`, `keep_ratio`, `keep`):
rows are in the same *budget group* when they have the same model, method family, device and
precision and train the same number of method entries (`trainable.peft_selected` + the dense
group: the optimizer-updated count, equal on both sides of a pair by construction). Within a group,
each FISH row is compared with the vanilla, random and reverse rows whose comparable config differs
from its own in the fewest keys (tags left out; ties: each of them). So FISH after a warm-up is
compared with reverse after a warm-up, not with reverse at initialisation, and with the one vanilla
row of its budget.

Paired differences: FISH − partner on the same task and seed (both complete; collapsed runs
included), per task and on the per-seed average over the tasks both rows have (seeds with every one
of those tasks). Reported: the mean difference, a 95% t confidence interval over seeds
(mean ± t(0.975, n−1)·s/√n, `scipy.stats.t`), and n; with a single pair, the difference and
"n=1, no CI"; and each seed's difference (`per seed`, in the order of `seeds`), so a reader sees
whether a wide interval comes from one seed. A seed where either run collapsed to the majority
class is marked there (`(FISH collapsed)`, `(random collapsed)`, `(both collapsed)`: a +0.00 between
two collapsed runs is no tie of two models), and `collapsed_runs` counts the collapsed runs a line
rests on (on the avg line: over its tasks and seeds).
"""

from __future__ import annotations

import math

import pandas as pd

from .cells import KIND_ORDER, budget, tasks_in

PARTNERS = ("vanilla", "random", "reverse")


def contrastive_groups(runs: pd.DataFrame) -> pd.DataFrame:
    """config, group (label), kind of every row in a budget group that holds a vanilla or FISH row and
    at least one other kind."""
    if runs.empty:
        return pd.DataFrame(columns=["config", "group", "kind"])
    r = runs.assign(budget=budget(runs))
    rows = []
    for config, g in r.groupby("config", sort=True):
        first = g.iloc[0]
        count = int(g["budget"].mode().iloc[0])
        device = first["row_config"].get("train.device", first["device"])
        precision = first["row_config"].get("train.precision", "")
        rows.append({"config": config, "kind": first["kind"], "model": first["model"], "method": first["method"],
                     "group": f"{first['model']} / {first['method']} / {count} / {device} {precision}".strip()})
    frame = pd.DataFrame(rows)
    keep = []
    for _, g in frame.groupby("group", sort=True):
        kinds = set(g["kind"])
        if len(kinds & set(KIND_ORDER)) >= 2 and kinds & {"vanilla", "fish"}:
            keep.append(g)
    if not keep:
        return pd.DataFrame(columns=["config", "group", "kind"])
    return pd.concat(keep)[["config", "group", "kind"]].reset_index(drop=True)


def _differing(a: dict, b: dict) -> int:
    keys = {k for k in (*a, *b) if not k.endswith(".tag")}
    return sum(1 for k in keys if str(a.get(k)) != str(b.get(k)))


def links(runs: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(FISH config, partner kind, partner config) for every comparison the linking rule makes."""
    groups = contrastive_groups(runs)
    if groups.empty:
        return []
    configs = runs.drop_duplicates("config").set_index("config")["row_config"]
    found = []
    for _, g in groups.groupby("group", sort=True):
        for fish in sorted(g.loc[g["kind"] == "fish", "config"]):
            for kind in PARTNERS:
                partners = sorted(g.loc[g["kind"] == kind, "config"])
                if not partners:
                    continue
                dist = {p: _differing(configs[fish], configs[p]) for p in partners}
                best = min(dist.values())
                found += [(fish, kind, p) for p in partners if dist[p] == best]
    return found


def t_interval(diffs: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t interval over `diffs` (NaN bounds for fewer than 2)."""
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return mean, math.nan, math.nan
    from scipy.stats import t

    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_differences(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(csv, shown): one line per comparison and task (and `avg`), FISH − partner over matched seeds."""
    lines = []
    keys = list(zip(runs["config"], runs["task"], runs["seed"])) if not runs.empty else []
    scores = dict(zip(keys, runs["score"])) if keys else {}
    collapsed = dict(zip(keys, runs["collapsed"].astype(bool))) if keys else {}
    for fish, kind, partner in links(runs):
        per_task: dict[str, dict[int, float]] = {}
        for task in tasks_in(runs[runs["config"].isin([fish, partner])]):
            seeds = sorted(s for (c, t, s) in scores if c == fish and t == task and (partner, task, s) in scores)
            if seeds:
                per_task[task] = {s: scores[(fish, task, s)] - scores[(partner, task, s)] for s in seeds}
        for task, diffs in per_task.items():
            sides = {s: (collapsed[(fish, task, s)], collapsed[(partner, task, s)]) for s in diffs}
            lines.append(_line(fish, kind, partner, task, diffs, sides))
        if len(per_task) > 1:
            common = sorted(set.intersection(*(set(d) for d in per_task.values())))
            avg = {s: sum(d[s] for d in per_task.values()) / len(per_task) for s in common}
            line = _line(fish, kind, partner, "avg (" + ",".join(per_task) + ")", avg, {})
            line["collapsed_runs"] = sum(collapsed[(c, t, s)] for t in per_task for s in common for c in (fish, partner))
            lines.append(line)
    columns = ["comparison", "fish", "partner", "task", "n", "mean_diff", "ci95_low", "ci95_high", "seeds", "per_seed",
               "collapsed_runs"]
    csv = pd.DataFrame(lines, columns=columns)
    shown = csv[["comparison", "fish", "partner", "task"]].copy()
    shown["FISH − partner (95% t CI over seeds)"] = [format_difference(line) for _, line in csv.iterrows()]
    shown["seeds"] = csv["seeds"]
    shown["per seed"] = csv["per_seed"]
    return csv, shown.set_index("comparison")


def _line(fish: str, kind: str, partner: str, task: str, diffs: dict[int, float],
          sides: dict[int, tuple[bool, bool]]) -> dict:
    """One comparison's line; `sides`: per seed, whether the FISH run and the partner's collapsed."""
    if not diffs:
        return {"comparison": f"FISH − {kind}", "fish": fish, "partner": partner, "task": task, "n": 0,
                "mean_diff": math.nan, "ci95_low": math.nan, "ci95_high": math.nan, "seeds": "", "per_seed": "",
                "collapsed_runs": 0}
    marks = {s: _collapse_mark(*sides.get(s, (False, False)), kind) for s in diffs}
    return {"comparison": f"FISH − {kind}", "fish": fish, "partner": partner, "task": task,
            **paired_stats(diffs, marks), "collapsed_runs": sum(a + b for a, b in sides.values())}


def paired_stats(diffs: dict[int, float], marks: dict[int, str] | None = None) -> dict:
    """n, mean_diff, ci95_low/high (95% t, 4 decimals), seeds and per_seed (each seed's difference,
    then its mark) of one set of per-seed differences (at least one)."""
    seeds = sorted(diffs)
    mean, low, high = t_interval([diffs[s] for s in seeds])
    return {"n": len(seeds), "mean_diff": round(mean, 4) or 0.0, "ci95_low": round(low, 4) or 0.0,
            "ci95_high": round(high, 4) or 0.0, "seeds": ",".join(str(s) for s in seeds),
            "per_seed": ", ".join(_signed(diffs[s]) + (marks or {}).get(s, "") for s in seeds)}


def format_difference(line: pd.Series | dict) -> str:
    """A line's mean difference, interval and n as a table shows it (`+1.62 [-2.22, +5.47] (n=3)`)."""
    return _fmt(line["mean_diff"], line["ci95_low"], line["ci95_high"], line["n"])


def _collapse_mark(fish: bool, partner: bool, kind: str) -> str:
    """` (both collapsed)`, ` (FISH collapsed)`, ` (<kind> collapsed)` or nothing."""
    if fish and partner:
        return " (both collapsed)"
    return " (FISH collapsed)" if fish else f" ({kind} collapsed)" if partner else ""


def _fmt(mean: float, low: float, high: float, n: int) -> str:
    if not n:
        return "no seed has every task"
    if n == 1:
        return f"{_signed(mean)} (n=1, no CI)"
    return f"{_signed(mean)} [{_signed(low)}, {_signed(high)}] (n={n})"


def _signed(x: float) -> str:
    """`x` to 2 decimals with its sign; a value that rounds to zero prints as +0.00, never -0.00."""
    return f"{round(x, 2) or 0.0:+.2f}"
