"""Importing vbench code while writing stand-ins, with vbench's import-time paths pointed at the stand-in roots.

Some vbench modules read files when they are imported: `vbench.third_party.ViCLIP.simple_tokenizer` binds
`default_bpe()` (`<CACHE_DIR>/ViCLIP/bpe_simple_vocab_16e6.txt.gz`, `wget` when missing) as the default argument of
`SimpleTokenizer.__init__`, and vbench.utils fixes `CACHE_DIR` from `VBENCH_CACHE_DIR` at its own import. Building a
model from that code (ViCLIP's text encoder calls `SimpleTokenizer()` with no argument) must therefore happen with
those paths pointed at our roots and downloads refused.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tokentrim.scoring.weights import block_downloads

__all__ = ["vbench_cache_dir"]


@contextlib.contextmanager
def vbench_cache_dir(cache_dir: Path, *, bpe_path: Path | None = None) -> Iterator[None]:
    """`VBENCH_CACHE_DIR` (env and an already imported `vbench.utils.CACHE_DIR`) = `cache_dir`, downloads refused;
    with `bpe_path`, ViCLIP's `SimpleTokenizer()` default vocabulary is that file. Everything restored on exit."""
    saved_env = os.environ.get("VBENCH_CACHE_DIR")
    restore: list[tuple[object, str, object]] = []
    try:
        os.environ["VBENCH_CACHE_DIR"] = str(cache_dir)
        with block_downloads(f"writing stand-ins under {cache_dir}"):
            utils = sys.modules.get("vbench.utils")
            if utils is not None:
                restore.append((utils, "CACHE_DIR", utils.CACHE_DIR))
                utils.CACHE_DIR = str(cache_dir)
            if bpe_path is not None:
                tokenizer = importlib.import_module("vbench.third_party.ViCLIP.simple_tokenizer").SimpleTokenizer
                restore.append((tokenizer.__init__, "__defaults__", tokenizer.__init__.__defaults__))
                tokenizer.__init__.__defaults__ = (str(bpe_path),)
            yield
    finally:
        for obj, attr, value in reversed(restore):
            setattr(obj, attr, value)
        if saved_env is None:
            os.environ.pop("VBENCH_CACHE_DIR", None)
        else:
            os.environ["VBENCH_CACHE_DIR"] = saved_env
