"""conf/ and the code agree: every key of every group option is a field of its schema (`tokentrim.config_schema`)
and is read by the code; every key the code reads from a config section exists in conf/.

"Read by the code" = consumed by the dataclass / function the section is built into (TokenTrimConfig, FlowMoConfig,
WandbLogger, TinyWorldScorer, the VBench keyword list, WanConfig, the samplers, the speed levers), or accessed by name
(`.key`, `["key"]`, `.get("key"`) in the package's source, or interpolated by another conf value (`${backbone.wan_dir}`).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import yaml

from tokentrim import cli
from tokentrim import config_schema as schema

SRC = Path(cli.__file__).parent
CONF = cli.CONF_DIR
GROUPS = ("backbone", "trim", "init", "prompts", "scorer", "logger", "launcher", "paths")


def _source() -> str:
    return "\n".join(p.read_text() for p in SRC.rglob("*.py") if "conf" not in p.parts)


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _option_keys(path: Path) -> dict:
    """The keys an option file puts into its group (a `@package _global_` option: its `<group>:` block)."""
    data = yaml.safe_load(path.read_text()) or {}
    data.pop("defaults", None)
    if "@package _global_" in path.read_text().split("\n", 3)[0] + path.read_text().split("\n", 3)[1]:
        return data.get(path.parent.name, {})
    return data


def _schema_of(group: str, option: dict) -> type:
    if group == "backbone":
        return schema.TinyBackboneConfig if option["kind"] == "tinyworld" else schema.WanBackboneConfig
    if group == "prompts":
        return schema.PROMPT_SCHEMAS[option["source"]]
    if group == "scorer":
        return schema.SCORER_SCHEMAS[option["name"]]
    if group == "logger":
        return schema.LOGGER_SCHEMAS[option["name"]]
    return {"trim": schema.TrimConfig, "init": schema.InitConfig, "launcher": schema.LauncherConfig,
            "paths": schema.PathsConfig}[group]


def _options():
    for group in GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            yield group, path


@pytest.mark.parametrize(("group", "path"), list(_options()), ids=lambda x: getattr(x, "name", x))
def test_each_option_has_exactly_the_keys_of_its_schema(group: str, path: Path) -> None:
    keys = set(_option_keys(path))
    cls = _schema_of(group, _option_keys(path))
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert keys <= _fields(cls), f"{path.name}: keys no schema field reads: {sorted(keys - _fields(cls))}"
    assert required <= keys, f"{path.name}: schema fields missing from the file: {sorted(required - keys)}"


def test_config_yaml_top_level_is_the_run_schema() -> None:
    data = yaml.safe_load((CONF / "config.yaml").read_text())
    groups = {next(iter(d)) if isinstance(d, dict) else d for d in data.pop("defaults")}
    data.pop("hydra")
    keys = set(data) | {"paths", "backbone", "trim", "init", "prompts", "scorer", "logger", "launcher"}
    required = {f.name for f in dataclasses.fields(schema.RunConfig) if f.default is dataclasses.MISSING}
    assert required <= keys <= _fields(schema.RunConfig)
    assert set(GROUPS) <= groups


def test_choice_enums_come_from_the_owning_code_and_name_each_group_option() -> None:
    """Each choice Enum is the owning module's tuple; launcher names are the `conf/launcher` files, each setting
    `launcher.name` to its own stem, and every logger / scorer option names a member of its Enum."""
    from tokentrim.models.loading import CHECKPOINT_KINDS
    from tokentrim.prompts import SOURCES
    from tokentrim.report.wandb_log import LOGGER_NAMES
    from tokentrim.scoring.planning import LONG_PROTOCOLS
    from tokentrim.scoring.scorer_config import SCORER_NAMES
    from tokentrim.tinyworld.prompts import SPLITS

    for enum_cls, values in ((schema.PromptSource, SOURCES), (schema.PromptSplit, SPLITS),
                             (schema.ScorerName, SCORER_NAMES), (schema.LongProtocol, LONG_PROTOCOLS),
                             (schema.LoggerName, LOGGER_NAMES), (schema.CheckpointKind, CHECKPOINT_KINDS)):
        assert tuple(member.value for member in enum_cls) == tuple(values), enum_cls
    launchers = sorted((CONF / "launcher").glob("*.yaml"))
    assert [member.value for member in schema.LauncherName] == [path.stem for path in launchers]
    for path in launchers:
        assert _option_keys(path)["name"] == path.stem, path.name
    for group, enum_cls in (("logger", schema.LoggerName), ("scorer", schema.ScorerName)):
        assert {_option_keys(path)["name"] for path in (CONF / group).glob("*.yaml")} == {m.value for m in enum_cls}


def _consumers() -> dict[type, set[str]]:
    """Schema -> the field names its consuming code takes by construction."""
    from tokentrim.scoring.scorer_config import VBENCH_ARGS
    from tokentrim.backbones import SPEED_KEYS
    from tokentrim.init.flowmo import FlowMoConfig
    from tokentrim.report.wandb_log import WandbLogger
    from tokentrim.tinyworld.metrics import TinyWorldScorer
    from tokentrim.trim import TokenTrimConfig

    tinyworld_kwargs = set(inspect.signature(TinyWorldScorer.__init__).parameters) - {"self"}
    return {
        schema.TrimConfig: _fields(TokenTrimConfig),
        schema.InitConfig: _fields(FlowMoConfig),
        schema.WandbLoggerConfig: _fields(WandbLogger),
        schema.TinyWorldScorerConfig: tinyworld_kwargs,
        schema.VbenchScorerConfig: set(VBENCH_ARGS),
        schema.WanBackboneConfig: set(),
        schema.TinyBackboneConfig: set(),
    }, set(SPEED_KEYS)


def _read_by_name(source: str, key: str) -> bool:
    return bool(re.search(rf"(\.{key}\b|\[\"{key}\"\]|get\(\"{key}\"|\"{key}\")", source))


def _interpolated() -> set[str]:
    """Keys other conf values are built from (`${backbone.wan_dir}/...`): read through the interpolation."""
    text = "\n".join(p.read_text() for p in CONF.rglob("*.yaml"))
    return {ref.split(".")[-1] for ref in re.findall(r"\$\{([\w.]+)\}", text)}


def test_every_conf_key_is_read_by_the_code() -> None:
    source = _source() + "\n" + "\n".join(f'"{key}"' for key in _interpolated())
    consumers, _ = _consumers()
    unread = []
    for group, path in _options():
        option = _option_keys(path)
        cls = _schema_of(group, option)
        for key in option:
            if key not in consumers.get(cls, set()) and not _read_by_name(source, key):
                unread.append(f"{group}/{path.name}: {key}")
    top = yaml.safe_load((CONF / "config.yaml").read_text())
    for key in set(top) - {"defaults", "hydra"}:
        nested = top[key] if isinstance(top[key], dict) else {}
        for sub in nested or [None]:
            name = sub or key
            if not _read_by_name(source, name):
                unread.append(f"config.yaml: {key}{'.' + sub if sub else ''}")
    assert not unread, f"conf keys nothing reads: {unread}"


# how the code names a section when it reads keys from it (variable -> schema(s) whose fields it may read)
SECTION_READERS = {
    "cli.py": {r"cfg\.backbone\.(\w+)": "backbone", r"cfg\.trim\.(\w+)": "trim", r"cfg\.init\.(\w+)": "init",
               r"cfg\.prompts\.(\w+)": "prompts", r"cfg\.report\.(\w+)": "report", r"cfg\.shard\.(\w+)": "shard",
               r"cfg\.paths\.(\w+)": "paths", r"cfg\.scorer\.(\w+)": "scorer", r"scorer\.get\(\"(\w+)\"": "scorer",
               r"\bcfg\.(\w+)\b": "run"},
    "generate.py": {r"cfg\.trim\.(\w+)": "trim", r"cfg\.init\.(\w+)": "init", r"cfg\.shard\.(\w+)": "shard",
                    r"\bcfg\.(\w+)\b": "run", r"prompts_cfg\[\"(\w+)\"\]": "prompts"},
    "prompts.py": {r"\bcfg\[\"(\w+)\"\]": "prompts", r"backbone\[\"(\w+)\"\]": "backbone",
                   r"backbone\.get\(\"(\w+)\"": "backbone", r"scorer\[\"(\w+)\"\]": "scorer"},
    "backbones.py": {r"\bcfg\[\"(\w+)\"\]": "backbone", r"\bcfg\.get\(\"(\w+)\"": "backbone",
                     r"video\[\"(\w+)\"\]": "video"},
    "evaluate.py": {r"scorer\.get\(\"(\w+)\"": "scorer", r"scorer\[\"(\w+)\"\]": "scorer"},
}
NOT_KEYS = {"copy", "get", "items", "keys", "values", "variant_name", "pop"}  # methods of the config objects


def _section_fields() -> dict[str, set[str]]:
    union = lambda *classes: set().union(*(_fields(c) for c in classes))  # noqa: E731
    return {
        "backbone": union(schema.TinyBackboneConfig, schema.WanBackboneConfig),
        "trim": _fields(schema.TrimConfig), "init": _fields(schema.InitConfig),
        "prompts": union(*schema.PROMPT_SCHEMAS.values()), "scorer": union(*schema.SCORER_SCHEMAS.values()),
        "report": _fields(schema.ReportConfig), "shard": _fields(schema.ShardConfig),
        "paths": _fields(schema.PathsConfig), "run": _fields(schema.RunConfig),
        "video": union(schema.TinyVideoConfig, schema.WanVideoConfig),
    }


def test_every_key_the_code_reads_exists_in_conf() -> None:
    fields = _section_fields()
    unknown = []
    for name, readers in SECTION_READERS.items():
        text = (SRC / name).read_text()
        for pattern, section in readers.items():
            for key in set(re.findall(pattern, text)) - NOT_KEYS - set(fields) - {"run"}:
                if key not in fields[section]:
                    unknown.append(f"{name}: {section}.{key}")
    assert not unknown, f"keys the code reads that no conf file has: {unknown}"


def test_the_walk_would_catch_a_stray_key(tmp_path: Path) -> None:
    """The checks above can fail: a key no schema knows, and a key nothing reads, are both found."""
    stray = tmp_path / "stray.yaml"
    stray.write_text("name: x\nenabled: true\np: 0.1\nfancy_knob: 3\n")
    keys = set(_option_keys(stray))
    assert keys - _fields(schema.TrimConfig) == {"fancy_knob"}
    assert not _read_by_name(_source(), "fancy_knob")
