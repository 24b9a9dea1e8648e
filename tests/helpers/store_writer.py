"""Child process for store tests: writes measurements and reports each committed id.

Usage: python store_writer.py URL RUN_ID WORKER N [overlap]
Prints "committed <key-index> <row-id>" after each add_measurement returns.
"""

import sys

from harness.protocol import Measurement
from harness.stats import summarize
from harness.store import MeasurementKey, Store

url, run_id, worker, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
overlap = len(sys.argv) > 5 and sys.argv[5] == "overlap"
store = Store(url)
cache: dict[int, Measurement] = {}  # the bootstrap CI costs ~50 ms: time the store, not the stats
for i in range(n):
    # With "overlap" every worker writes the same keys: exactly one row per key must survive.
    idx = i if overlap else worker * 100000 + i
    if idx % 7 not in cache:
        samples = [float(idx % 7) + 1.0 + j * 0.01 for j in range(200)]
        cache[idx % 7] = Measurement(
            samples_ms=samples, stats=summarize(samples), protocol="quick", threads=1
        )
    m = cache[idx % 7]
    key = MeasurementKey("encoder", f"enc{idx % 7}", resolution=64 * (idx + 1), protocol="quick")
    rid = store.add_measurement(run_id, key, m, extra={"worker": worker, "i": i})
    print(f"committed {idx} {rid}", flush=True)
