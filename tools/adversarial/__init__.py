"""The cases of `tools/adversarial.py`: an adversarial suite for minivecdb, one module per theme.

`core` holds the registry, the five outcomes and the oracles; every other module registers cases with `@case`.
"""
CASE_MODULES = ("validation", "numerics", "metadata", "persistence", "locking", "concurrency", "cli", "api", "server")


def load_all():
    "Import every case module (registering its cases) and return the registry."
    import importlib
    for m in CASE_MODULES: importlib.import_module(f"{__name__}.{m}")
    from .core import REGISTRY
    return REGISTRY
from . import codecs  # noqa: E402,F401  the sq8 / calibrate / explain cases; adds the "codecs" category before the runner reads it
from . import distributed  # noqa: E402,F401  the ShardedIndex (Ray) cases; adds the "distributed" category before the runner reads it
from . import collections  # noqa: E402,F401  the minivecdb.connect / Collection cases; adds the "collections" category before the runner reads it
from . import filters  # noqa: E402,F401  the filter language cases; adds the "filters" category before the runner reads it
from . import keyword  # noqa: E402,F401  the BM25 / hybrid search cases; adds the "keyword" category before the runner reads it
