"""Self-attention KV caches of the causal video transformer, model-free (the network imports them, not the reverse).

  protocol.py  `PrunableCache`: what TokenTrim's controller needs from a cache (discard the staged batch, list the
               cached frames, prune token positions in given frames), and `Pruned`, what a prune removed.
  entries.py   `CachedEntries`: committed K/V labelled by (frame, token); pruning, eviction, snapshot/restore.
  kv.py        `KVCache`: Self Forcing's cache (a staged block after the committed entries).
  rolling.py   `RollingKVCache`: Rolling Forcing's cache (attention sink re-roped before a rolling working cache).
"""

from tokentrim.caches.entries import CachedEntries, CacheSnapshot
from tokentrim.caches.kv import KVCache
from tokentrim.caches.protocol import PrunableCache, Pruned
from tokentrim.caches.rolling import DENOISE, REFRESH, RollingKVCache

__all__ = [
    "DENOISE", "REFRESH", "CacheSnapshot", "CachedEntries", "KVCache", "PrunableCache", "Pruned", "RollingKVCache",
]
