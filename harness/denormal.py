"""Flush denormal floats to zero while timing on a CPU: the one helper every runner uses.

Denormals slow CPU arithmetic by orders of magnitude and depend on data, not on the model,
so runners flush them around warm-up and timing when the protocol asks
(``Protocol.flush_denormal``). torch is used only if it is already imported (a runner that
needs it has imported it), so this module stays importable without torch.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


def set_flush_denormal(enabled: bool) -> bool:
    """Turn flushing on/off for torch; True if it is now on (False: no torch, or unsupported)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    return bool(torch.set_flush_denormal(enabled)) and enabled


@contextlib.contextmanager
def flush_denormal(enabled: bool, device: str = "cpu") -> Iterator[bool]:
    """Flush denormals on CPU inside the block (turned off afterwards); yields whether it is on."""
    if not enabled or str(device).split(":")[0] != "cpu":
        yield False
        return
    on = set_flush_denormal(True)
    try:
        yield on
    finally:
        if on:
            set_flush_denormal(False)
