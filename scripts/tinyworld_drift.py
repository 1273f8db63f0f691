#!/usr/bin/env python3
"""How much long videos drift: per dimension, the mean score of each video's first clips vs its last clips.

Reads a variant's `scores.csv` (written by `tokentrim score`; 2-second VBench-Long clips, `clip` = 0, 1, ...; the
whole-video row `clip = -1` is ignored) and prints a Markdown table: mean over videos of the first `--first-clips`
clips and of the last `--last-clips` clips, the relative change 100 (last - first) / first, and a 95 % percentile
bootstrap CI of that change over videos (`--n-boot` resamples, seed 0). Only videos with at least
first + last clips count. Deterministic.

    python scripts/tinyworld_drift.py outputs/default/tiny/baseline/scores.csv [--first-clips 2 --last-clips 3] [--out F]
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from collections import defaultdict
from pathlib import Path

from tokentrim.report.atomic_io import write_text_atomic


def first_last_means(path: Path, first: int, last: int) -> dict[str, list[tuple[float, float]]]:
    """{dimension: [(first-clips mean, last-clips mean) per video]} from a scores.csv (failed rows skipped)."""
    clips: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["error"] or row["score"] == "" or int(row["clip"]) < 0:
                continue
            clips[row["dimension"]][row["video"]][int(row["clip"])] = float(row["score"])
    pairs: dict[str, list[tuple[float, float]]] = {}
    for dimension, videos in sorted(clips.items()):
        for by_clip in videos.values():
            order = sorted(by_clip)
            if len(order) < first + last:
                continue
            head = [by_clip[c] for c in order[:first]]
            tail = [by_clip[c] for c in order[-last:]]
            pairs.setdefault(dimension, []).append((sum(head) / first, sum(tail) / last))
    return pairs


def means(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """Mean over videos of the first-clips and of the last-clips scores."""
    return sum(p[0] for p in pairs) / len(pairs), sum(p[1] for p in pairs) / len(pairs)


def relative_change(pairs: list[tuple[float, float]]) -> float:
    head, tail = means(pairs)
    return 100.0 * (tail - head) / abs(head) if head else math.nan


def bootstrap_ci(pairs: list[tuple[float, float]], n_boot: int, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    stats = sorted(relative_change([pairs[rng.randrange(len(pairs))] for _ in pairs]) for _ in range(n_boot))
    return stats[int(0.025 * (n_boot - 1))], stats[int(0.975 * (n_boot - 1))]


def drift_table(path: Path, first: int, last: int, n_boot: int) -> str:
    pairs = first_last_means(path, first, last)
    if not pairs:
        raise ValueError(f"{path}: no video has {first} + {last} scored clips")
    lines = [f"Drift in `{path}`: first {first} clip(s) vs last {last} clip(s) of each video (2-s clips); "
             f"95 % CI: percentile bootstrap over videos, n_boot={n_boot}, seed 0.", "",
             "| dimension | videos | first clips | last clips | change % | 95 % CI |", "|---|---|---|---|---|---|"]
    for dimension, p in pairs.items():
        low, high = bootstrap_ci(p, n_boot)
        head, tail = means(p)
        lines.append(f"| {dimension} | {len(p)} | {head:.4f} | {tail:.4f} | {relative_change(p):+.1f} | "
                     f"[{low:+.1f}, {high:+.1f}] |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scores", type=Path, help="a variant's scores.csv")
    parser.add_argument("--first-clips", type=int, default=2, help="clips at the start (2 = the first 4 s)")
    parser.add_argument("--last-clips", type=int, default=3, help="clips at the end (3 = the last 6 s)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (atomically)")
    args = parser.parse_args()
    if args.first_clips < 1 or args.last_clips < 1 or args.n_boot < 1:
        raise SystemExit("--first-clips, --last-clips and --n-boot must be >= 1")
    if not args.scores.is_file():
        raise SystemExit(f"scores file {args.scores} does not exist (run `tokentrim score` first)")
    table = drift_table(args.scores, args.first_clips, args.last_clips, args.n_boot)
    print(table, end="")
    if args.out is not None:
        write_text_atomic(args.out, table)


if __name__ == "__main__":
    main()
