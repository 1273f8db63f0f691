"""W&B logging: offline runs really contain config, drift series and tables; logger=none never imports wandb."""

import json
import struct
import sys

import pytest

from tokentrim.report import make_report
from synthetic_runs import synthetic_run_dir
from tokentrim.report.wandb_log import WandbLogger, make_logger

# W&B transaction log (`run-<id>.wandb`): a 7-byte file header (":W&B", magic 0xBEE1, version 0), then LevelDB-log
# style 32 KiB blocks of records, each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last).
# Every payload is a serialised `wandb.proto.wandb_internal_pb2.Record`.
BLOCK_LEN = 32768
HEADER_LEN = 7


def read_wandb_records(path):
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER_LEN])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0)
    records, pos, pending = [], HEADER_LEN, b""
    while pos + HEADER_LEN <= len(data):
        left = BLOCK_LEN - pos % BLOCK_LEN
        if left < HEADER_LEN:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER_LEN])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + HEADER_LEN:pos + HEADER_LEN + length]
        pos += HEADER_LEN + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + chunk if kind == 4 else chunk)
            records.append(record)
            pending = b""
        else:
            pending = chunk if kind == 2 else pending + chunk
    return records


def _offline_run(run_dir):
    """(config dict, history rows, summary dict, files, artifacts) of one offline W&B run directory."""
    (wandb_file,) = run_dir.glob("run-*.wandb")
    config, history, summary, files, artifacts = {}, [], {}, [], []
    for record in read_wandb_records(wandb_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
            run_meta = record.run
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            history.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.summary.update})
        elif kind == "files":
            files += [f.path for f in record.files.files]
        elif kind == "artifact":
            artifacts.append(record.artifact)
    return run_meta, config, history, summary, files, artifacts


@pytest.fixture(scope="module")
def offline_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    prompts = ("a red car", "a cat")
    synthetic_run_dir(root / "base", prompts=prompts, seeds=(0,), num_batches=6, seed=3)
    synthetic_run_dir(root / "trim", trim="tokentrim", prompts=prompts, seeds=(0,), num_batches=6, seed=3,
                      config={"trim": {"top_p": 0.1, "lam": 2.0}})
    result = make_report(root, n_boot=20, max_video_plots=1, max_heatmaps=1,
                         logger_cfg={"name": "wandb", "mode": "offline", "project": "tt-test", "dir": str(root / "wb")})
    return root, result


def test_offline_run_holds_config_drift_series_and_tables(offline_report):
    root, result = offline_report
    assert len(result.wandb_runs) == 2 and all(p.parent == root / "wb" / "wandb" for p in result.wandb_runs)
    runs = {}
    for run_dir in result.wandb_runs:
        meta, config, history, summary, files, artifacts = _offline_run(run_dir)
        runs[meta.display_name] = (meta, config, history, summary, files, artifacts, run_dir)
    assert set(runs) == {"self_forcing/baseline", "self_forcing/tokentrim"}
    meta, config, history, summary, files, artifacts, run_dir = runs["self_forcing/tokentrim"]
    assert meta.run_group == root.name and meta.project == "tt-test"
    assert config["trim"] == {"name": "tokentrim", "top_p": 0.1, "lam": 2.0}
    assert config["report"]["variant"] == "tokentrim"
    # drift series: one history row per batch, values equal to the events on disk
    events = [json.loads(line) for v in ("a red car-0", "a cat-0")
              for line in (root / "trim" / "events" / f"{v}.jsonl").read_text().splitlines()]
    drift_rows = [h for h in history if "drift/t" in h]
    assert len(drift_rows) == len(events) == 12
    assert sorted(h["drift/D"] for h in drift_rows if h["drift/D"] is not None) == pytest.approx(
        sorted(e["D"] for e in events if e["D"] is not None))
    assert sum(h["drift/triggered"] for h in drift_rows) == sum(e["triggered"] for e in events) > 0
    # tables are files in the run; read them back
    tables = {f.split("/")[-1].split("_")[0]: run_dir / "files" / f for f in files if f.endswith(".table.json")}
    series = json.loads(next(p for k, p in tables.items() if k == "drift").read_text())
    assert len(series["data"]) == 12 and "threshold" in series["columns"]
    trigger_table = json.loads(next(p for k, p in tables.items() if k == "trigger").read_text())
    assert len(trigger_table["data"]) == sum(e["triggered"] for e in events)
    scores = json.loads(next(p for k, p in tables.items() if k == "scores").read_text())
    assert {row[0] for row in scores["data"]} >= {"subject_consistency", "final"}
    report_table = json.loads(next(p for k, p in tables.items() if k == "report").read_text())
    assert len(report_table["data"]) == 2
    # per-dimension and total scores in the summary match table.csv
    import pandas as pd

    row = pd.read_csv(root / "table.csv").set_index("variant").loc["tokentrim"]
    assert summary["totals/final"] == pytest.approx(row["final"])
    assert summary["scores/subject_consistency"] == pytest.approx(row["subject_consistency"])
    # the report tables travel once, as one artifact of one run; each run uploads only its own plots
    (report_artifact,) = [a for *_, artifacts_of, _ in runs.values() for a in artifacts_of if a.type == "report"]
    entries = {e.path for e in report_artifact.manifest.contents}
    assert {"table.md", "table.csv", "table.tex"} <= entries
    for name, (*_, history_of, _, _, _, _) in runs.items():
        plot_keys = {k for h in history_of for k in h if k.startswith("plots/")}
        tag = name.replace("/", "_")
        assert plot_keys and all(tag in k for k in plot_keys), (name, plot_keys)


def test_logger_none_works_without_wandb_importable(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    with pytest.raises(ImportError):
        import wandb  # noqa: F401
    synthetic_run_dir(tmp_path / "run", num_batches=4, seed=0)
    result = make_report(tmp_path / "run", n_boot=10, plots=False, logger_cfg={"name": "none"})
    assert result.wandb_runs == [] and (tmp_path / "run" / "table.md").is_file()
    assert make_logger(None) is None and make_logger({"name": "none"}) is None
    assert WandbLogger(mode="disabled").log_report([], [], out_dir=tmp_path) == []


def test_logger_config_rejects_unknown_mode_and_keys():
    with pytest.raises(ValueError, match="logger.mode"):
        make_logger({"name": "wandb", "mode": "cloud"})
    with pytest.raises(ValueError, match="unknown key"):
        make_logger({"name": "wandb", "projekt": "x"})


def test_logger_group_files_build_the_documented_loggers():
    from pathlib import Path

    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "src" / "tokentrim" / "conf" / "logger"
    assert make_logger(OmegaConf.load(conf / "none.yaml")) is None
    built = make_logger(OmegaConf.load(conf / "wandb.yaml"))
    assert isinstance(built, WandbLogger) and built.mode == "offline" and not built.log_videos
