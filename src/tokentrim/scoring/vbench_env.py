"""The environment vbench 0.1.5 code runs in: weight roots, offline flags, import-time copies, logging, download guard.

`vbench_session(roots, dimension)` sets `VBENCH_CACHE_DIR`, `TORCH_HOME`, `HF_HOME`, `HF_HUB_OFFLINE=1`,
`TRANSFORMERS_OFFLINE=1`, patches the module-level `CACHE_DIR` copies vbench modules took at import and the cache dirs
transformers / huggingface_hub fixed at import, holds `weights.block_downloads`, and restores all of it on exit.
motion_smoothness alone runs with `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`: vbench 0.1.5 `torch.load`s the AMT pickle
without `weights_only=False` (fixed upstream in 24f9d2a), which torch >= 2.6 refuses. The flag lets that pickle run
code, so it is confined to that dimension's call. vbench modules call `logging.basicConfig(level=INFO)` at import;
`import_vbench` undoes that on the root logger.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
import os
import sys
from collections.abc import Iterator

from tokentrim.scoring.weights import WeightRoots, block_downloads

__all__ = ["import_vbench", "restore_root_logging", "vbench_session", "vbench_version"]


def vbench_version() -> str:
    try:
        return importlib.metadata.version("vbench")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


@contextlib.contextmanager
def restore_root_logging() -> Iterator[None]:
    """vbench modules call `logging.basicConfig(level=INFO)` at import; undo that on the root logger."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def import_vbench(module: str):
    with restore_root_logging():
        return importlib.import_module(module)


@contextlib.contextmanager
def vbench_session(roots: WeightRoots, dimension: str) -> Iterator[None]:
    """Env vars and vbench's import-time `CACHE_DIR` copies pointed at `roots` for one dimension; all restored after."""
    env = {
        "VBENCH_CACHE_DIR": str(roots.cache_dir),
        "TORCH_HOME": str(roots.torch_home),
        "HF_HOME": str(roots.hf_home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    if dimension == "motion_smoothness":
        env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    saved_env = {name: os.environ.get(name) for name in env}
    patched: list[tuple[object, str, object]] = []

    def patch(module_name: str, attr: str, value: object) -> None:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attr):
            patched.append((module, attr, getattr(module, attr)))
            setattr(module, attr, value)

    def patch_object(obj: object, attr: str, value: object) -> None:
        patched.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    try:
        os.environ.update(env)
        utils = import_vbench("vbench.utils")
        patch("vbench.utils", "CACHE_DIR", str(roots.cache_dir))
        # Modules that did `from vbench.utils import CACHE_DIR` hold their own copy (read at call time).
        for name in ("vbench.temporal_style", "vbench.overall_consistency", "vbench.third_party.ViCLIP.simple_tokenizer"):
            patch(name, "CACHE_DIR", str(roots.cache_dir))
        # ViCLIP's text encoder builds `SimpleTokenizer()` with the vocab path bound at that module's first import.
        tokenizer = sys.modules.get("vbench.third_party.ViCLIP.simple_tokenizer")
        if tokenizer is not None:
            patch_object(tokenizer.SimpleTokenizer.__init__, "__defaults__",
                         (os.path.join(str(roots.cache_dir), "ViCLIP", "bpe_simple_vocab_16e6.txt.gz"),))
        # temporal_style / overall_consistency memoise text features per prompt in a mutable default argument, for
        # the life of the process: start each call empty, so features of other weights are never reused.
        for name in ("vbench.temporal_style", "vbench.overall_consistency"):
            module = sys.modules.get(name)
            if module is not None:
                patch_object(module.get_text_features, "__defaults__", ({},))
        # transformers / huggingface_hub fix their cache dirs and offline flag at import time.
        hub_cache = str(roots.hf_home / "hub")
        patch("transformers.utils.hub", "TRANSFORMERS_CACHE", hub_cache)
        patch("transformers.utils.hub", "HUGGINGFACE_HUB_CACHE", hub_cache)
        patch("transformers.utils.hub", "_is_offline_mode", True)
        patch("huggingface_hub.constants", "HF_HUB_CACHE", hub_cache)
        patch("huggingface_hub.constants", "HF_HUB_OFFLINE", True)
        assert utils.CACHE_DIR == str(roots.cache_dir)
        with block_downloads(f"scoring {dimension}"):
            yield
    finally:
        for module, attr, value in reversed(patched):
            setattr(module, attr, value)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
