"""harness.quiet: optional packages' start-up noise is dropped, nothing else."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

BUILD = """
import logging
import harness  # installs the filters
from transformers import Qwen2Config, Qwen2ForCausalLM
Qwen2ForCausalLM(Qwen2Config(hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, vocab_size=100))
logging.getLogger("torchao").warning("a torchao warning that matters")
logging.getLogger("torch.utils._pytree").warning("a pytree warning that matters")
print("built")
"""


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao not installed")
def test_building_a_model_prints_no_torchao_start_up_lines_but_keeps_other_warnings():
    r = subprocess.run([sys.executable, "-c", BUILD], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "built", r.stderr
    assert "Failed to load" not in r.stderr and "natively supported" not in r.stderr
    assert "a torchao warning that matters" in r.stderr
    assert "a pytree warning that matters" in r.stderr
    assert "Detected no triton" not in r.stderr


def test_the_no_triton_line_is_dropped_and_nothing_else():
    import logging

    from harness import quiet

    quiet.install()
    log = logging.getLogger("torchao.kernel.intmm")

    def rec(msg: str) -> logging.LogRecord:
        return log.makeRecord(log.name, logging.WARNING, __file__, 1, msg, None, None)

    no_triton = (
        "Warning: Detected no triton, on systems without Triton certain kernels will not work"
    )
    assert not all(f.filter(rec(no_triton)) for f in log.filters)
    assert all(f.filter(rec("an intmm warning that matters")) for f in log.filters)


def test_install_is_idempotent():
    import logging

    from harness import quiet

    quiet.install()
    quiet.install()
    for name, _ in quiet.DROPPED:
        assert sum(isinstance(f, quiet._Drop) for f in logging.getLogger(name).filters) == 1
