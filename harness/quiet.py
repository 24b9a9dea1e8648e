"""Drop two start-up warnings of optional packages that say nothing about a measurement.

``transformers`` imports ``torchao`` (when installed) the first time it builds a model. On a
CPU build of torch, torchao then logs one ``Failed to load .../_C_*.so`` line per CUDA kernel
library it ships, and torch's pytree logs a deprecation for two of torchao's enums: lines
per process, so a sweep with a worker process per round printed them before every round. The
filters match those messages only; every other record of the two loggers passes.
"""

from __future__ import annotations

import logging
import re

#: (logger name, pattern of the messages dropped)
DROPPED = (
    ("torchao", re.compile(r"^Failed to load \S+\.so\b")),
    ("torch.utils._pytree", re.compile(r"is an Enum subclass and is now natively supported")),
    # a CPU-only machine has no Triton by design; torchao says so when its int-mm kernels load
    ("torchao.kernel.intmm", re.compile(r"Detected no triton")),
)


class _Drop(logging.Filter):
    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def install() -> None:
    """Attach the filters (idempotent; the loggers need not exist yet)."""
    for name, pattern in DROPPED:
        log = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in log.filters):
            log.addFilter(_Drop(pattern))
