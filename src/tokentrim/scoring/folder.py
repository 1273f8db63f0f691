"""Score videos made elsewhere: a plain folder of mp4s becomes a run directory `tokentrim report` reads beside ours.

    tokentrim score scorer=vbench backbone=self_forcing score.videos_dir=/data/self_forcing_official \
        score.variant=official_self_forcing

writes `<run dir>/videos.csv` (a manifest whose `path` column points at the files; nothing is copied) and then
`<run dir>/scores.csv` as for a generated run. Prompts and seeds:

- VBench naming (default): `<prompt>-<index>.mp4`; the prompt is the stem without `-<index>`, the seed is the index
  (our own runs name videos `<prompt>-<seed>.mp4`, so the report pairs equal (prompt, seed) with our baseline);
- `score.prompt_file`: a CSV with header `path,prompt` or a JSON object `{file: prompt}`; `path` / `file` relative to
  the folder (or absolute). Exactly the listed files are scored; the seed is the trailing `-<n>` of the file stem when
  there is one, else the file's rank among the files of the same prompt (0, 1, ...).

The manifest's `trim` column holds the variant label (`score.variant`), `init` is "none" and `backbone` the composed
backbone's name, so the report puts the folder in the backbone's table, paired with its baseline. A file that cannot be
probed gets `status = error` (left out of scoring and counted in the report's error column).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from collections import defaultdict
from pathlib import Path

import pandas as pd

from tokentrim import video_io
from tokentrim.report.atomic_io import write_text_atomic
from tokentrim.scoring.prompts import prompt_from_video_name

logger = logging.getLogger(__name__)

__all__ = ["folder_manifest", "write_folder_run"]

_SEED_SUFFIX = re.compile(r"-(\d+)$")
_LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")


def _read_prompt_file(path: Path, videos_dir: Path) -> dict[Path, str]:
    """{file path: prompt} from a CSV `path,prompt` or a JSON {file: prompt} (module docstring)."""
    if not path.is_file():
        raise FileNotFoundError(f"score.prompt_file {path} does not exist")
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
                raise ValueError(f"score.prompt_file {path} must hold a JSON object {{file: prompt}}")
            pairs = list(raw.items())
        else:
            with open(path, encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle)
                if reader.fieldnames is None or not {"path", "prompt"} <= set(reader.fieldnames):
                    raise ValueError(f"score.prompt_file {path} must be a CSV with header 'path,prompt', got header "
                                     f"{reader.fieldnames}")
                pairs = [(row["path"], row["prompt"]) for row in reader]
    except UnicodeDecodeError as err:
        raise ValueError(f"score.prompt_file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"score.prompt_file {path} is not valid JSON ({err.msg}, line {err.lineno})") from None
    mapping: dict[Path, str] = {}
    for name, prompt in pairs:
        file = Path(name) if Path(name).is_absolute() else videos_dir / name
        if not prompt or not prompt.strip():
            raise ValueError(f"score.prompt_file {path}: empty prompt for {name!r}")
        if not file.is_file():
            raise FileNotFoundError(f"score.prompt_file {path} lists {name!r}, but {file} does not exist")
        mapping[file] = prompt.strip()
    if not mapping:
        raise ValueError(f"score.prompt_file {path} lists no file")
    return mapping


def folder_manifest(videos_dir: str | os.PathLike, *, variant: str, backbone: str,
                    prompt_file: str | os.PathLike | None = None) -> pd.DataFrame:
    """videos.csv rows (run_data.VIDEOS_COLUMNS + `path`) for the mp4s of `videos_dir` (module docstring)."""
    folder = Path(videos_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"score.videos_dir {folder} is not a directory")
    if not _LABEL.match(variant):
        raise ValueError(f"score.variant must be a label of letters, digits, '_.+-' (it names a directory), got {variant!r}")
    if prompt_file is not None:
        prompts = _read_prompt_file(Path(prompt_file), folder)
    else:
        files = sorted(p for p in folder.glob("*.mp4") if not p.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"score.videos_dir {folder} holds no .mp4 file")
        unnamed = [p.name for p in files if not _SEED_SUFFIX.search(p.stem)]
        if unnamed:
            raise ValueError(f"score.videos_dir {folder}: {unnamed[0]!r} is not VBench-named '<prompt>-<index>.mp4'; "
                             f"give score.prompt_file (CSV path,prompt or JSON {{file: prompt}})")
        prompts = {p: prompt_from_video_name(p.name) for p in files}
    rank: dict[str, int] = defaultdict(int)
    rows = []
    for path, prompt in sorted(prompts.items()):
        match = _SEED_SUFFIX.search(path.stem)
        seed = int(match.group(1)) if match else rank[prompt]
        rank[prompt] += 1
        row = {"video": path.stem, "prompt": prompt, "seed": seed, "backbone": backbone, "trim": variant,
               "init": "none", "num_frames": 0, "fps": math.nan, "wall_s": math.nan, "num_batches": 0,
               "num_triggers": 0, "num_regenerations": 0, "num_pruned_tokens": 0, "status": "ok", "error": "",
               "path": str(path.resolve())}
        try:
            info = video_io.probe(path)
            row.update(num_frames=info.num_frames, fps=info.fps)
        except (OSError, ValueError) as err:
            row.update(status="error", error=f"unreadable video: {str(err).splitlines()[0][:200]}")
            logger.warning("%s: %s", path, row["error"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    duplicates = frame["video"][frame["video"].duplicated()].tolist()
    if duplicates:
        raise ValueError(f"score.videos_dir: file stems must be unique (the `video` column), got {duplicates[:3]}")
    return frame


def write_folder_run(run_dir: str | os.PathLike, videos_dir: str | os.PathLike, *, variant: str, backbone: str,
                     prompt_file: str | os.PathLike | None = None) -> Path:
    """Write `<run_dir>/videos.csv` for a folder of mp4s (atomic; rewritten on every call). Returns run_dir."""
    frame = folder_manifest(videos_dir, variant=variant, backbone=backbone, prompt_file=prompt_file)
    run_dir = Path(run_dir)
    write_text_atomic(run_dir / "videos.csv", frame.to_csv(index=False))
    logger.info("%s: manifest of %d video(s) from %s (variant %s)", run_dir, len(frame), videos_dir, variant)
    return run_dir
