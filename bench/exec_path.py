"""Which execution path a bench actually ran, read from what the modules observe, and the one-line failure when a
requested lever fell back (issue 19 item 7). A bench calls `start()` before building its model, `observe(...)` after
its timed work, stores the dict in its results under "execution_path", writes its results, then `fail_if_fell_back`.

Observables (CausalWanModel, src/tokentrim/models/wan_causal.py and cuda_graphs.py, vae_decode_fusion.py):
  * compile_blocks: the blocks' compiled region functions are installed, and torch._dynamo compiled graphs in this
    process (counters["stats"]["unique_graphs"] grew; graph breaks counted). Requested and no graph = eager ran.
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


def _dynamo_counts() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {"unique_graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values()))}


def start() -> dict[str, int]:
    """The process's compile counters before the bench's work (compare in `observe`)."""
    return _dynamo_counts()


def observe(model, before: dict[str, int], *, fused_norm_used: bool = False) -> dict:
    """The path `model` (a CausalWanModel) ran since `start()` returned `before`. JSON-ready."""
    speed = model.speed
    attention = [block.self_attn for block in model.blocks]
    dynamo = _dynamo_counts()
    path: dict = {"requested": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(speed).items()}}
    path["compile_blocks"] = {
        "requested": speed.compile_blocks,
        "installed": all(block._before_fn is not None for block in model.blocks),
        "graphs_compiled": dynamo["unique_graphs"] - before["unique_graphs"],
        "graph_breaks": dynamo["graph_breaks"] - before["graph_breaks"],
    }
    path["attention_kv_splits"] = {
        "requested": speed.attention_kv_splits,
        "layers_reset_to_one_call": sum(a.kv_splits != speed.attention_kv_splits for a in attention),
        "split_calls": sum(a.split_kv_calls for a in attention),
        "one_calls": sum(a.one_call_calls for a in attention),
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


def fell_back(path: dict) -> list[str]:
    """Each requested lever that did not run as requested, as a short phrase."""
    reasons = []
    compiled = path["compile_blocks"]
    if compiled["requested"] and not (compiled["installed"] and compiled["graphs_compiled"] > 0):
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
