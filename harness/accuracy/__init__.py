"""Accuracy rows: lmms-eval / tidy-CSV ingest, Avg-5, the alias table, paper data, the join.

Modules: ``keys`` (canonical names, :func:`normalize_key`), ``avg5`` (rows, merging, Avg-5),
``lmms_eval`` (results files), ``manifest`` (files -> keys), ``csv_io`` (tidy accuracy CSV,
latency CSV), ``paper`` (the FastVLM paper's tables), ``join`` (latency x accuracy -> points).
None of them imports torch.
"""

from harness.accuracy.keys import AVG5, Key, normalize_key

__all__ = ["AVG5", "Key", "normalize_key"]
