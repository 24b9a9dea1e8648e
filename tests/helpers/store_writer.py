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
for i in range(n):
    # With "overlap" every worker writes the same keys: exactly one row per key must survive.
    idx = i if overlap else worker * 100000 + i
    samples = [float(idx % 97) + 1.0 + j * 0.01 for j in range(200)]
    m = Measurement(samples_ms=samples, stats=summarize(samples), protocol="quick", threads=1)
    key = MeasurementKey("encoder", f"enc{idx % 7}", resolution=64 * (idx + 1), protocol="quick")
    rid = store.add_measurement(run_id, key, m, extra={"worker": worker, "i": i})
    print(f"committed {idx} {rid}", flush=True)
