"""Predict TTFT on devices you do not have: cost model (meta device), device profiles,
robust calibration, leave-one-out validation, search pruning, the paper's claims checked.
See docs/predict.md."""
