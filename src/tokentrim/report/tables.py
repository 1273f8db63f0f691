"""Paper-style tables from run / sweep directories: Markdown (`table.md`), CSV (`table.csv`) and LaTeX (`table.tex`).

Rows are (backbone, variant). `table.md` and `table.tex` hold three tables:
    1. scores: one column per VBench dimension, then Quality, Semantic, Final, then extra (non-VBench) dimensions,
       each "mean [CI]";
    2. relative change vs the paired baseline, "delta% [CI]";
    3. cost: overhead x, trigger rate, regenerations and pruned tokens per video.
`table.csv` is one wide row per variant with every number unformatted (`<metric>`, `<metric>_ci_lo`,
`<metric>_ci_hi`, `<metric>_delta_pct`, `<metric>_delta_lo`, `<metric>_delta_hi`).
The aggregation itself lives in `tokentrim.report.aggregate`; the captions restate it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tokentrim.report.aggregate import (
    MetricStat,
    VariantSummary,
    summarize_runs,
)
from tokentrim.report.atomic_io import atomic_path, write_text_atomic
from tokentrim.report.run_data import BASELINE, RunData, load_runs

logger = logging.getLogger(__name__)

__all__ = [
    "ReportTables",
    "build_tables",
    "load_runs",
    "summaries_to_frame",
    "write_tables",
]

TOTAL_HEADERS = {"quality": "Quality", "semantic": "Semantic", "final": "Final"}


@dataclasses.dataclass
class ReportTables:
    """The three rendered tables plus the raw per-variant frame."""

    frame: pd.DataFrame  # one row per (backbone, variant), unformatted numbers (table.csv)
    markdown: str  # table.md
    latex: str  # table.tex
    summaries: list[VariantSummary]


def _stat_columns(prefix: str, stat: MetricStat) -> dict[str, float]:
    return {
        prefix: stat.value,
        f"{prefix}_ci_lo": stat.ci_lo,
        f"{prefix}_ci_hi": stat.ci_hi,
        f"{prefix}_delta_pct": stat.delta_pct,
        f"{prefix}_delta_lo": stat.delta_lo,
        f"{prefix}_delta_hi": stat.delta_hi,
    }


def summaries_to_frame(summaries: Sequence[VariantSummary]) -> pd.DataFrame:
    """One wide row per variant with every statistic as a plain number (the content of `table.csv`)."""
    rows = []
    for s in summaries:
        row: dict[str, object] = {
            "backbone": s.backbone,
            "variant": s.label,
            "is_baseline": s.is_baseline,
            "baseline": s.baseline_label,
            "n_videos": s.n_videos,
            "n_errors": s.n_errors,
            "n_paired": s.n_paired,
        }
        for name, stat in s.dimensions.items():
            row.update(_stat_columns(name, stat))
        for name, stat in s.totals.items():
            row.update(_stat_columns(name, stat))
        for name, stat in s.extras.items():
            row.update(_stat_columns(name, stat))
        row.update(
            {
                "dimensions_scored": s.dimensions_scored,
                "partial": s.partial,
                "final_dimensions": s.final_label,
                "overhead_x": s.overhead_x,
                "trigger_rate": s.trigger_rate,
                "tested_batches": s.tested_batches,
                "regenerations_per_video": s.regenerations_per_video,
                "pruned_tokens_per_video": s.pruned_tokens_per_video,
                "notes": "; ".join(s.notes),
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(x: float, digits: int = 4, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _fmt_ci(value: float, lo: float, hi: float, digits: int = 4, signed: bool = False) -> str:
    text = _fmt(value, digits, signed)
    if math.isfinite(lo) and math.isfinite(hi):
        text += f" [{_fmt(lo, digits, signed)}, {_fmt(hi, digits, signed)}]"
    return text


def _partial_label(summaries: Sequence[VariantSummary]) -> str:
    """The Final's label (`scoring.totals.final_label`, set by `summarize_runs`; one scope for every row), or ''."""
    labels = list(dict.fromkeys(s.final_label for s in summaries if s.final_label))
    return "; ".join(labels)


@dataclasses.dataclass
class _Grid:
    """A rendered table: header cells and rows of cells (strings)."""

    header: list[str]
    rows: list[list[str]]


def _score_grid(summaries: Sequence[VariantSummary], partial: str) -> _Grid:
    dims = _ordered_keys(summaries, "dimensions")
    extras = _ordered_keys(summaries, "extras")
    final_header = f"Final ({partial})" if partial else "Final"
    header = ["backbone", "variant", "videos", *dims, "Quality", "Semantic", final_header]
    header += [f"{e} (extra)" for e in extras]
    rows = []
    for s in summaries:
        cells = [s.backbone, s.label + (" (baseline)" if s.is_baseline else ""), str(s.n_videos)]
        cells += [_fmt_ci(st.value, st.ci_lo, st.ci_hi) for st in (s.dimensions.get(d, MetricStat()) for d in dims)]
        cells += [_fmt_ci(st.value, st.ci_lo, st.ci_hi) for st in (s.totals[m] for m in TOTAL_HEADERS)]
        cells += [_fmt_ci(st.value, st.ci_lo, st.ci_hi) for st in (s.extras.get(e, MetricStat()) for e in extras)]
        rows.append(cells)
    return _Grid(header, rows)


def _delta_grid(summaries: Sequence[VariantSummary]) -> _Grid:
    dims = _ordered_keys(summaries, "dimensions")
    extras = _ordered_keys(summaries, "extras")
    header = ["backbone", "variant", "pairs", *[f"{d} Δ%" for d in dims], "Quality Δ%", "Semantic Δ%", "Final Δ%"]
    header += [f"{e} (extra) Δ%" for e in extras]
    rows = []
    for s in summaries:
        if s.is_baseline or s.baseline_label is None:
            continue
        stats = [s.dimensions.get(d, MetricStat()) for d in dims] + [s.totals[m] for m in TOTAL_HEADERS]
        stats += [s.extras.get(e, MetricStat()) for e in extras]
        cells = [s.backbone, s.label, str(s.n_paired)]
        cells += [_fmt_ci(st.delta_pct, st.delta_lo, st.delta_hi, digits=2, signed=True) for st in stats]
        rows.append(cells)
    return _Grid(header, rows)


def _cost_grid(summaries: Sequence[VariantSummary]) -> _Grid:
    header = ["backbone", "variant", "overhead × vs baseline (decider on)", "trigger rate", "tested batches", "regen / video", "pruned / video"]
    rows = [
        [
            s.backbone,
            s.label + (" (baseline)" if s.is_baseline else ""),
            _fmt(s.overhead_x, 3),
            _fmt(s.trigger_rate, 3),
            str(s.tested_batches),
            _fmt(s.regenerations_per_video, 2),
            _fmt(s.pruned_tokens_per_video, 1),
        ]
        for s in summaries
    ]
    return _Grid(header, rows)


def _ordered_keys(summaries: Sequence[VariantSummary], attribute: str) -> list[str]:
    keys: list[str] = []
    for s in summaries:
        for key in getattr(s, attribute):
            if key not in keys:
                keys.append(key)
    return keys


def _captions(baseline: str, n_boot: int, seed: int, ci: float, partial: str) -> tuple[str, str, str]:
    level = f"{round(ci * 100)}%"
    boot = f"{level} CI: percentile bootstrap over prompts (all seeds of a prompt resampled together), n_boot={n_boot}, seed={seed}"
    if n_boot == 0:
        boot = "no CIs (n_boot=0)"
    partial_text = (
        f" Final is over {partial} (the dimensions requested): VBench weights are renormalised over them, so it is not "
        "comparable with a full 16-dimension Final Score; a variant without a scored video for one of them has no Final."
        if partial
        else ""
    )
    scores = (
        "Scores per variant. Aggregation: per video, mean over its clips (whole-video score if it has no clips), "
        "then unweighted mean over videos; failed scores and errored videos are left out. Quality / Semantic / Final "
        "use the official VBench normalisation (scripts/constant.py, Quality weight 4, Semantic weight 1) on the "
        f"per-variant means of the VBench dimensions; '(extra)' columns are not VBench and not in Final.{partial_text} "
        f"{boot}."
    )
    deltas = (
        f"Relative change vs the paired baseline '{baseline}' of the same backbone: 100·(variant − baseline)/|baseline| "
        "over videos with the same prompt and seed in both runs (per dimension, pairs where both are scored). "
        + (f"{level} CI: paired bootstrap over prompts (one resample applied to both sides), n_boot={n_boot}, seed={seed}."
           if n_boot else "No CIs (n_boot=0).")
    )
    cost = (
        "Cost. overhead × = median generation wall time per video (videos.csv wall_s) over the paired videos, divided "
        "by the paired baseline's, left blank when env.json devices differ. The baseline runs TokenTrim's decider "
        "without pruning (trim.enabled=false: summaries, drift, top-k and one host sync per batch), so this is the "
        "cost of pruning and regenerating only; the cost against a generator without a decider, and the monitoring "
        "cost alone, are measured by bench/overhead.py. Trigger rate = triggered / tested batches (not "
        "warm-up, threshold defined; events/*.jsonl); regenerations and pruned tokens are means per video."
    )
    return scores, deltas, cost


def _markdown_grid(grid: _Grid) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in grid.header) + " |", "|" + "---|" * len(grid.header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in grid.rows]
    return "\n".join(lines)


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "Δ": r"$\Delta$", "×": r"$\times$", "–": "--",
    "−": "-", "·": r"$\cdot$", "|": r"$|$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (and map Δ, ×, – to math / dashes)."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def _latex_grid(grid: _Grid, caption: str, label: str) -> str:
    spec = "ll" + "r" * (len(grid.header) - 2)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\scriptsize",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in grid.header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in grid.rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def build_tables(
    runs: Sequence[RunData],
    *,
    title: str = "TokenTrim report",
    baseline: str = BASELINE,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> ReportTables:
    """Aggregate `runs` (`aggregate.summarize_runs`) and render the three tables (see module docstring)."""
    summaries = summarize_runs(runs, baseline=baseline, n_boot=n_boot, seed=seed, ci=ci)
    partial = _partial_label(summaries)
    cap_scores, cap_deltas, cap_cost = _captions(baseline, n_boot, seed, ci, partial)
    grids = [
        ("Table 1", cap_scores, _score_grid(summaries, partial), "tab:scores"),
        ("Table 2", cap_deltas, _delta_grid(summaries), "tab:deltas"),
        ("Table 3", cap_cost, _cost_grid(summaries), "tab:cost"),
    ]
    md = [f"# {title}", ""]
    for name, caption, grid, _ in grids:
        md += [f"**{name}.** {caption}", "", _markdown_grid(grid) if grid.rows else "(no variant with a paired baseline)", ""]
    notes = [(s, n) for s in summaries for n in s.notes]
    if notes:
        md += ["Notes:", ""] + [f"- {s.backbone} / {s.label}: {n}" for s, n in notes] + [""]
    tex = ["% generated by tokentrim.report.tables; needs \\usepackage{booktabs}"]
    for name, caption, grid, label in grids:
        if grid.rows:
            tex += [_latex_grid(grid, caption, label), ""]
    return ReportTables(
        frame=summaries_to_frame(summaries), markdown="\n".join(md), latex="\n".join(tex), summaries=summaries
    )


def write_tables(tables: ReportTables, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write `table.md`, `table.csv` and `table.tex` into `out_dir`, each atomically; returns their paths."""
    out_dir = Path(out_dir)
    paths = {
        "table_md": write_text_atomic(out_dir / "table.md", tables.markdown),
        "table_tex": write_text_atomic(out_dir / "table.tex", tables.latex),
    }
    with atomic_path(out_dir / "table.csv") as tmp:
        tables.frame.to_csv(tmp, index=False, float_format="%.10g")
    paths["table_csv"] = out_dir / "table.csv"
    return paths
