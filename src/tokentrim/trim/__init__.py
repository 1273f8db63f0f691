"""TokenTrim: drift-triggered pruning of the temporal KV cache (arXiv 2602.00268)."""

from tokentrim.trim.tokentrim import Decision, TokenTrim, TokenTrimConfig, check_trim_config
from tokentrim.trim.canonical import experiment_key

__all__ = ["Decision", "TokenTrim", "TokenTrimConfig", "check_trim_config", "experiment_key"]
