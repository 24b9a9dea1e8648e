"""vlm-pareto: accuracy-vs-TTFT Pareto benchmarking for vision-language models.

TTFT = vision-encoder latency + projector + LLM prefill (FastVLM, CVPR 2025, Sec. 4).
"""

__version__ = "0.1.0"

from harness import quiet as _quiet

_quiet.install()
