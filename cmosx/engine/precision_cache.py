"""The old name of :mod:`cmosx.engine.probe_cache` (which now caches memory probes too); imports still work."""

from cmosx.engine.probe_cache import (  # noqa: F401
    ENV_VAR,
    OLD_ENV_VAR,
    VERSION,
    cache_key,
    cache_path,
    clear,
    load,
    load_entry,
    machine_id,
    store,
    store_entry,
)
