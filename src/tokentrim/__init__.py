"""TokenTrim harness: generation, TokenTrim, VBench scoring and reports."""

__version__ = "0.1.0"
