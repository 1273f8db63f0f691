"""Load run directories (one variant each) and sweep directories (several run dirs) into pandas frames.

A run directory (layout fixed in the project brief) holds `videos.csv` (manifest), `scores.csv` (one row per
video x clip x dimension), `events/<video>.jsonl` (one JSON object per generated batch), and optionally
`config.yaml` (resolved Hydra config) and `env.json` (`tokentrim.env_info`). A sweep directory holds run
directories at any depth below it (Hydra multirun puts them at `<sweep>/<job>/`).

The variant label of a run is the `variant` its config.yaml names (the CLI names the paired baseline
`report.baseline_variant`, "baseline" by default), else `trim` (the TokenTrim variant) joined with `init` by "+" when
`init` is not "none", e.g. "tokentrim", "tokentrim+flowmo", and BASELINE ("baseline", as on disk) for trim none and
init none. When two runs of a sweep share a label and a backbone
(a parameter sweep), the numeric config values that differ between them are appended,
"tokentrim (top_p=0.05)", or the run directory name if none differ: "tokentrim [job3]".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

VIDEOS_COLUMNS: tuple[str, ...] = (
    "video", "prompt", "seed", "backbone", "trim", "init", "num_frames", "fps", "wall_s", "num_batches",
    "num_triggers", "num_regenerations", "num_pruned_tokens", "status", "error",
)
SCORES_COLUMNS: tuple[str, ...] = ("video", "clip", "dimension", "score", "error", "scorer", "content_hash")
EVENT_SCALARS: tuple[str, ...] = (
    "video", "t", "D", "mu", "sigma", "threshold", "is_warmup", "triggered", "retries", "num_pruned_tokens",
    "num_pruned_entries", "decision_ms",
)
MAX_SEARCH_DEPTH = 4
BASELINE = "baseline"  # label of the paired baseline (trim none, init none): the directory name the CLI gives it
# config leaves never treated as swept parameters (they differ between runs without being ablation knobs)
NOT_A_PARAMETER = re.compile(r"(seed|dir|path|run_id|output|name|time|date|device|host|shard|_target_)", re.IGNORECASE)


@dataclasses.dataclass
class RunData:
    """Everything `report/` reads from one run directory.

    Attributes:
        run_dir: the directory.
        label: variant label (see module docstring); unique within a loaded sweep.
        variant: the label before de-duplication (trim[+init]).
        backbone: backbone name from `videos.csv` (the most common value).
        videos: `videos.csv` rows, all statuses.
        scores: `scores.csv` rows (empty frame with SCORES_COLUMNS if the file is absent).
        events: one row per (video, batch) with EVENT_SCALARS columns plus `drift` (list of floats or None),
            `pruned_indices` (list or None) and `grid` ([h, w] or None).
        config: parsed `config.yaml` (plain dict) or None.
        env: parsed `env.json` or None.
    """

    run_dir: Path
    label: str
    variant: str
    backbone: str
    videos: pd.DataFrame
    scores: pd.DataFrame
    events: pd.DataFrame
    config: dict[str, Any] | None
    env: dict[str, Any] | None

    @property
    def ok_videos(self) -> pd.DataFrame:
        """Manifest rows with status "ok" (errored videos have no mp4 and are left out of every statistic)."""
        return self.videos[self.videos["status"].astype(str) == "ok"]

    def video_path(self, video: str) -> Path:
        """Path of the mp4 of `video` (file stem from `videos.csv`)."""
        return self.run_dir / "videos" / f"{video}.mp4"


def variant_label(trim: str, init: str) -> str:
    """'trim' or 'trim+init' (init omitted when it is 'none' or empty)."""
    trim = str(trim) if str(trim) not in ("", "nan") else "none"
    init = str(init) if str(init) not in ("", "nan") else "none"
    if trim == "none" and init == "none":
        return BASELINE
    return trim if init == "none" else f"{trim}+{init}"


def find_run_dirs(path: str | os.PathLike) -> list[Path]:
    """Run dirs at `path`: [path] if it holds `videos.csv`, else every dir below it (depth <= 4) that does, sorted.

    Raises:
        FileNotFoundError: `path` does not exist, or no `videos.csv` was found (not a run or sweep dir).
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"report dir {root} does not exist or is not a directory")
    if (root / "videos.csv").is_file():
        return [root]
    found: list[Path] = []
    for depth in range(1, MAX_SEARCH_DEPTH + 1):
        found.extend(p.parent for p in root.glob("/".join(["*"] * depth) + "/videos.csv") if p.is_file())
    if not found:
        raise FileNotFoundError(
            f"{root} is neither a run dir (no videos.csv) nor a sweep dir (no */videos.csv up to depth "
            f"{MAX_SEARCH_DEPTH})"
        )
    return sorted(set(found))


def _read_yaml(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} must hold a mapping at top level, got {type(loaded).__name__}")
    return loaded


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_videos_csv(path: Path) -> pd.DataFrame:
    """Read a manifest; require the columns the report uses, fill the optional counters with 0."""
    videos = pd.read_csv(path, dtype={"video": str, "prompt": str, "trim": str, "init": str, "backbone": str})
    required = ("video", "prompt", "seed", "status")
    missing = [c for c in required if c not in videos.columns]
    if missing:
        raise ValueError(f"{path} lacks required column(s) {missing}; columns are {list(videos.columns)}")
    for column in ("trim", "init"):
        if column not in videos.columns:
            videos[column] = "none"
        videos[column] = videos[column].fillna("none").astype(str)
    if "backbone" not in videos.columns:
        videos["backbone"] = "unknown"
    videos["backbone"] = videos["backbone"].fillna("unknown").astype(str)
    for column in ("wall_s",):
        if column not in videos.columns:
            videos[column] = float("nan")
    for column in ("num_batches", "num_triggers", "num_regenerations", "num_pruned_tokens"):
        if column not in videos.columns:
            videos[column] = 0
        videos[column] = pd.to_numeric(videos[column], errors="coerce")
    return videos


def read_scores_csv(path: Path) -> pd.DataFrame:
    """Read `scores.csv` (or an empty frame); `clip` -> int, `score` -> float (NaN on error), `scorer` defaults 'vbench'."""
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SCORES_COLUMNS})
    scores = pd.read_csv(path, dtype={"video": str, "dimension": str, "error": str, "scorer": str})
    missing = [c for c in ("video", "dimension", "score") if c not in scores.columns]
    if missing:
        raise ValueError(f"{path} lacks required column(s) {missing}; columns are {list(scores.columns)}")
    if "clip" not in scores.columns:
        scores["clip"] = -1
    if "scorer" not in scores.columns:
        scores["scorer"] = "vbench"
    scores["clip"] = pd.to_numeric(scores["clip"], errors="coerce").fillna(-1).astype(int)
    scores["score"] = pd.to_numeric(scores["score"], errors="coerce")
    scores["scorer"] = scores["scorer"].fillna("vbench").astype(str)
    return scores


def read_events_dir(events_dir: Path) -> pd.DataFrame:
    """All `events/*.jsonl` of a run as one frame (one row per batch); nulls become NaN in numeric columns."""
    rows: list[dict[str, Any]] = []
    if events_dir.is_dir():
        for path in sorted(p for p in events_dir.glob("*.jsonl") if not p.name.startswith(".")):  # skip temp files
            with open(path, encoding="utf-8") as handle:
                for line_no, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}:{line_no} is not valid JSON ({err.msg})") from err
                    record.setdefault("video", path.stem)
                    rows.append(record)
    columns = [*EVENT_SCALARS, "drift", "pruned_indices", "grid"]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    events = pd.DataFrame(rows)
    for column in columns:
        if column not in events.columns:
            events[column] = None
    numeric = ("t", "D", "mu", "sigma", "threshold", "retries", "num_pruned_tokens", "num_pruned_entries",
               "decision_ms")
    for column in numeric:
        events[column] = pd.to_numeric(events[column], errors="coerce")
    for column in ("is_warmup", "triggered"):
        events[column] = events[column].fillna(False).astype(bool)
    events["video"] = events["video"].astype(str)
    return events.sort_values(["video", "t"], kind="stable").reset_index(drop=True)


def load_run(run_dir: str | os.PathLike) -> RunData:
    """Load one run directory (see module docstring).

    Raises:
        FileNotFoundError: `run_dir/videos.csv` is missing.
    """
    run_dir = Path(run_dir)
    videos_path = run_dir / "videos.csv"
    if not videos_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run dir: {videos_path} is missing")
    videos = read_videos_csv(videos_path)
    config = _read_yaml(run_dir / "config.yaml")
    labels = sorted({variant_label(t, i) for t, i in zip(videos["trim"], videos["init"])})
    if len(labels) > 1:
        raise ValueError(f"{videos_path} mixes variants {labels}; a run dir holds one variant (trim, init)")
    if config is not None and _dig(config, "variant"):  # named by the run (the baseline; variant=...)
        variant = str(_dig(config, "variant"))
    elif labels:
        variant = labels[0]
    elif config is not None:
        variant = variant_label(_dig(config, "trim.name", "none"), _dig(config, "init.name", "none"))
    else:
        variant = BASELINE
    backbones = videos["backbone"].value_counts()
    backbone = str(backbones.index[0]) if len(backbones) else str(_dig(config or {}, "backbone.name", "unknown"))
    return RunData(
        run_dir=run_dir,
        label=variant,
        variant=variant,
        backbone=backbone,
        videos=videos,
        scores=read_scores_csv(run_dir / "scores.csv"),
        events=read_events_dir(run_dir / "events"),
        config=config,
        env=_read_json(run_dir / "env.json"),
    )


def _dig(mapping: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """`mapping["a"]["b"]` for dotted="a.b", or `default` when any level is missing."""
    node: Any = mapping
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def flatten_config(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"a.b.c": leaf}."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def differing_parameters(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Dotted numeric config leaves present in all `configs` whose values differ (seeds, paths, names ignored)."""
    if len(configs) < 2:
        return []
    flat = [flatten_config(c) for c in configs]
    keys = sorted(set.intersection(*(set(f) for f in flat)))
    swept = []
    for key in keys:
        values = [f[key] for f in flat]
        is_numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if is_numeric and len(set(values)) > 1 and not NOT_A_PARAMETER.search(key):
            swept.append(key)
    return swept


def load_runs(path: str | os.PathLike) -> list[RunData]:
    """Load a run dir or every run dir of a sweep dir; make labels unique per backbone (see module docstring)."""
    runs = [load_run(run_dir) for run_dir in find_run_dirs(path)]
    groups: dict[tuple[str, str], list[RunData]] = {}
    for run in runs:
        groups.setdefault((run.backbone, run.variant), []).append(run)
    for group in groups.values():
        if len(group) < 2:
            continue
        keys = differing_parameters([r.config for r in group]) if all(r.config for r in group) else []
        for run in group:
            if keys:
                flat = flatten_config(run.config or {})
                run.label = f"{run.variant} (" + ", ".join(f"{k.split('.')[-1]}={flat[k]}" for k in keys) + ")"
            else:
                run.label = f"{run.variant} [{run.run_dir.name}]"
        if len({r.label for r in group}) < len(group):
            for run in group:
                run.label = f"{run.variant} [{run.run_dir.name}]"
    seen: set[tuple[str, str]] = set()
    for run in runs:
        key = (run.backbone, run.label)
        if key in seen:
            raise ValueError(f"two run dirs give backbone {run.backbone!r} variant {run.label!r}; rename one ({run.run_dir})")
        seen.add(key)
    return runs
