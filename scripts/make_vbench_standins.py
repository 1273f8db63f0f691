"""Write VBench stand-in weights: the real architectures with seeded random weights, in the published file formats,
at exactly the paths `tokentrim vbench-check` lists. **Scores computed with them mean nothing**; they exist so every
dimension's code path runs end to end (CI, GPU benches) without the real checkpoints.

Usage:
    python scripts/make_vbench_standins.py OUT_DIR [--dimensions DIM ...] [--seed N]

Writes `OUT_DIR/vbench` (VBENCH_CACHE_DIR), `OUT_DIR/torch` (TORCH_HOME) and `OUT_DIR/huggingface` (HF_HOME); files
already there are kept (rerunning is cheap). Prints the roots, the overrides to pass to `tokentrim` and the
`vbench-check` line of every requested dimension. Exit code 0 if all of them are ready, 1 if not, 2 on bad arguments.
Sizes: CLIP ViT-L/14 alone is ~0.9 GB (fp16, as published); all families together a few GB.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tokentrim.scoring.totals import ALL_DIMENSIONS


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder that receives vbench/, torch/ and huggingface/")
    parser.add_argument("--dimensions", nargs="+", default=None,
                        help="VBench dimensions to make ready (default: every dimension that has a stand-in family)")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed of every network's init (default 0)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = [dim for dim in args.dimensions or [] if dim not in ALL_DIMENSIONS]
    if unknown:  # before any folder is created
        sys.stderr.write(f"--dimensions must be VBench dimensions {list(ALL_DIMENSIONS)}, got {unknown}\n")
        return 2
    from tokentrim.scoring.standins import family_of, write_standins  # noqa: PLC0415  (after the argument check)
    from tokentrim.scoring.weights import check_dimensions, format_check  # noqa: PLC0415

    dims = list(args.dimensions or ALL_DIMENSIONS)
    roots = write_standins(args.out_dir, dims, seed=args.seed)
    status = check_dimensions(dims, cache_dir=roots.cache_dir, torch_home=roots.torch_home, hf_home=roots.hf_home)
    print(f"stand-in weights (seed {args.seed}; scores mean nothing) under {args.out_dir}:")
    print(f"  VBENCH_CACHE_DIR={roots.cache_dir}\n  TORCH_HOME={roots.torch_home}\n  HF_HOME={roots.hf_home}")
    print(f"tokentrim vbench-check scorer=vbench scorer.cache_dir={roots.cache_dir} scorer.torch_home={roots.torch_home} "
          f"scorer.hf_home={roots.hf_home}")
    print(format_check(status))
    without = [dim for dim in dims if family_of(dim) is None and not status[dim].is_ready]
    if without:
        print(f"no stand-in family for: {', '.join(without)}")
    return 0 if all(item.is_ready for item in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
