"""Prompt suites from `conf/prompts/*.yaml`.

`source`: `list` (the `prompts` key), `file` (one prompt per line at `path`), `vbench` (the installed package's
VBench_full_info.json, optionally only the prompts of `dimensions`), `tinyworld` (`count` prompts of the TinyWorld
grammar from `split`, deterministic in `seed`). `limit` keeps the first N.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SOURCES = ("list", "file", "vbench", "tinyworld")


def load_prompts(cfg: Mapping[str, Any]) -> list[str]:
    source = cfg.get("source", "list")
    if source == "list":
        prompts = list(cfg.get("prompts") or [])
    elif source == "file":
        from tokentrim.scoring.prompts import load_prompt_file

        prompts = [entry.prompt for entry in load_prompt_file(cfg["path"])]
    elif source == "vbench":
        from tokentrim.scoring.prompts import load_vbench_suite

        prompts = [entry.prompt for entry in load_vbench_suite(cfg.get("dimensions"))]
    elif source == "tinyworld":
        from tokentrim.tinyworld.prompts import prompt_set

        prompts = prompt_set(split=cfg.get("split", "heldout"), count=int(cfg.get("count", 4)), seed=int(cfg.get("seed", 0)))
    else:
        raise ValueError(f"prompts.source must be one of {list(SOURCES)}, got {source!r}")
    if cfg.get("limit") is not None:
        prompts = prompts[: int(cfg["limit"])]
    if not prompts:
        raise ValueError(f"prompts ({cfg.get('name', source)}) is empty: give prompts.prompts, prompts.path or another suite")
    if not cfg.get("seeds"):
        raise ValueError("prompts.seeds is empty: give at least one seed, e.g. prompts.seeds=[0]")
    return prompts
