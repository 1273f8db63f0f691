"""Hydra configuration tree of tokentrim (a package so that Hydra can load it from an installed wheel)."""
