"""Which execution path a bench actually ran, read from what the modules observe, and the one-line failure when a
requested lever fell back (issue 19 item 7). A bench calls `start()` before building its model, `observe(...)` after
its timed work, stores the dict in its results under "execution_path", writes its results, then `fail_if_fell_back`.

Observables (CausalWanModel, src/tokentrim/models/wan_causal.py and cuda_graphs.py, vae_decode_fusion.py):
  * compile_blocks: the blocks' compiled region functions are installed, and dynamo holds compiled code for both
    regions (its cache entries for their code objects; graphs compiled and graph breaks in the bench's span are
    recorded too). Requested and no compiled code = eager ran.
  * attention_kv_splits: per layer, `CausalSelfAttention.kv_splits` (reset to 1 when a split call failed, with a
    warning) and the counts of calls that ran split vs as one call (`split_kv_calls`, `one_call_calls`; calls whose
    key length does not divide evenly run as one call by design). Requested and a layer reset, or no split call at
    all = fell back.
  * cuda_graphs: `GraphedCalls.failed` (capture failed: eager from then on), graphs captured and replays.
  * vae_fused_norm: `CompiledRMSNormSiLU.failed` (torch.compile failed: eager norm), when the bench decodes.
  * attention_backends (cuDNN / flash priority) is recorded as requested: which SDPA kernel ran is not observable
    without the profiler (bench/official_side_by_side.py --what profile names the kernels).
"""

from __future__ import annotations

import dataclasses
import sys

import torch


def counts(model=None) -> dict[str, int]:
    """The process's compile counters and `model`'s attention-path counters now (compare in `observe`)."""
    from torch._dynamo.utils import counters

    attention = [block.self_attn for block in model.blocks] if model is not None else []
    return {"unique_graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "split_calls": sum(a.split_kv_calls for a in attention),
            "one_calls": sum(a.one_call_calls for a in attention)}


def start(model=None) -> dict[str, int]:
    """The counters before the bench's work (a model built later starts its attention counters at 0)."""
    return counts(model)


def _compiled_regions(model) -> bool:
    """Whether dynamo holds compiled code for every block's two regions (the compiled wrappers ran and compiled)."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    block = model.blocks[0]
    codes = [type(block).before_attention.__code__, type(block).after_attention.__code__]
    return all(len(_debug_get_cache_entry_list(code)) > 0 for code in codes)


def observe(model, before: dict[str, int], *, fused_norm_used: bool = False) -> dict:
    """The path `model` (a CausalWanModel) ran since `before = start(...)` / `counts(model)`. JSON-ready."""
    speed = model.speed
    now = counts(model)
    path: dict = {"requested": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(speed).items()}}
    path["compile_blocks"] = {
        "requested": speed.compile_blocks,
        "installed": all(block._before_fn is not None for block in model.blocks),
        "compiled_code": _compiled_regions(model),
        "graphs_compiled": now["unique_graphs"] - before["unique_graphs"],
        "graph_breaks": now["graph_breaks"] - before["graph_breaks"],
    }
    path["attention_kv_splits"] = {
        "requested": speed.attention_kv_splits,
        "layers_reset_to_one_call": sum(b.self_attn.kv_splits != speed.attention_kv_splits for b in model.blocks),
        "split_calls": now["split_calls"] - before["split_calls"],
        "one_calls": now["one_calls"] - before["one_calls"],
    }
    graphs = getattr(model, "_graphs", None)
    path["cuda_graphs"] = {
        "requested": speed.cuda_graphs,
        "capture_failed": bool(graphs is not None and graphs.failed),
        "graphs": 0 if graphs is None else len(graphs.graphs),
        "replays": 0 if graphs is None else int(graphs.replays),
    }
    path["attention_backends"] = {"requested": list(speed.attention_backends), "observed": "not observable (profiler)"}
    if fused_norm_used:
        from tokentrim.models.vae_decode_fusion import compiled_rms_norm_silu

        path["vae_fused_norm"] = {"requested": True, "compile_failed": compiled_rms_norm_silu().failed}
    path["fell_back"] = fell_back(path)
    return path


def accumulate(total: dict | None, path: dict) -> dict:
    """Two observations of one lever setting (e.g. the videos of one bench variant) as one: call counts summed,
    flags and states from the later one, fallbacks recomputed."""
    if total is None:
        return path
    merged = {**path, "attention_kv_splits": dict(path["attention_kv_splits"]), "compile_blocks": dict(path["compile_blocks"])}
    for key in ("split_calls", "one_calls"):
        merged["attention_kv_splits"][key] += total["attention_kv_splits"][key]
    for key in ("graphs_compiled", "graph_breaks"):
        merged["compile_blocks"][key] += total["compile_blocks"][key]
    merged["fell_back"] = fell_back(merged)
    return merged


def fell_back(path: dict) -> list[str]:
    """Each requested lever that did not run as requested, as a short phrase."""
    reasons = []
    compiled = path["compile_blocks"]
    if compiled["requested"] and not (compiled["installed"] and compiled["compiled_code"]):
        reasons.append("compile_blocks: no graph compiled (eager ran)")
    splits = path["attention_kv_splits"]
    if splits["requested"] > 1:
        if splits["layers_reset_to_one_call"]:
            reasons.append(f"attention_kv_splits: {splits['layers_reset_to_one_call']} layer(s) fell back to one call")
        elif splits["split_calls"] == 0:
            reasons.append(f"attention_kv_splits={splits['requested']}: no call ran split "
                           f"({splits['one_calls']} ran as one call)")
    graphs = path["cuda_graphs"]
    if graphs["requested"] and (graphs["capture_failed"] or graphs["graphs"] == 0):
        reasons.append("cuda_graphs: " + ("capture failed (eager ran)" if graphs["capture_failed"] else "no graph captured"))
    if path.get("vae_fused_norm", {}).get("compile_failed"):
        reasons.append("vae_fused_norm: torch.compile failed (eager norm ran)")
    return reasons


def fail_if_fell_back(script: str, path: dict, results_file=None) -> None:
    """Exit 3 with one line when a requested lever fell back (the results, already written, record the path)."""
    if path["fell_back"]:
        where = f"; results recorded in {results_file}" if results_file else ""
        sys.stderr.write(f"{script}: requested lever fell back: {'; '.join(path['fell_back'])}{where}\n")
        raise SystemExit(3)


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
