"""Wall time of the README's main command, `tokentrim run` with no arguments (the embedded TinyWorld default),
from an empty results directory, in a fresh process: generation (baseline + TokenTrim), scoring and report.

    python bench/main_job.py            # writes bench/results/main_job_<device>_<yyyymm>.json

Protocol: `--repeats` cold runs (each in a new empty directory, so nothing is cached); median and min/max of the
wall time of the whole command. The README quotes the median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_config import with_config_defaults  # noqa: E402  (bench-only helper)

from tokentrim.env_info import collect_env  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The flags; their defaults are conf/bench/main_job.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--out", type=Path)
    return with_config_defaults(parser, "main_job")


def main() -> None:
    args = build_parser().parse_args()
    walls = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as workdir:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "tokentrim.cli", "run"], cwd=workdir, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "WANDB_MODE": "disabled"})
            walls.append(time.perf_counter() - start)
    env = collect_env("cpu")
    result = {"command": "tokentrim run", "repeats": args.repeats, "wall_s_median": statistics.median(walls),
              "wall_s_min": min(walls), "wall_s_max": max(walls), "cpu_count": os.cpu_count(), "env": env}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"main_job_cpu_{time.strftime('%Y%m')}.json"
    path.write_text(json.dumps(result, indent=1))
    sys.stdout.write(f"tokentrim run: median {result['wall_s_median']:.1f} s over {args.repeats} cold run(s) on {os.cpu_count()} cores -> {path}\n")


if __name__ == "__main__":
    main()
