"""Backends: one module per way of running a model, behind the interfaces of :mod:`.base`.

Built-ins are registered here as lazy ``"module:attr"`` entries, so importing this package
imports no runtime (torch, coremltools, mlx). A sweep selects a backend per side by name
(``sweeps/backend/*.yaml``: ``encoder_backend``, ``llm_backend``); a user backend is one
module registered from its preset's ``runtimes`` mapping (see docs/backends.md).
"""

from __future__ import annotations

from harness.backends.base import BACKENDS, Backend, get_backend, names_for, register_backend

register_backend("torch", "harness.backends.torch:BACKEND", ("encoder", "llm"))
register_backend("coreml", "harness.backends.coreml:BACKEND", ("encoder",))
register_backend("mlx", "harness.backends.mlx:BACKEND", ("llm",))
register_backend("fake", "harness.backends.fake:BACKEND", ("encoder", "llm"))
# Deployment runtimes (issue 14): ONNX Runtime, ExecuTorch, torch.compile.
register_backend(
    "onnxrt", "harness.backends.onnxrt:BACKEND", ("encoder", "llm"), aliases=("onnxruntime", "ort")
)
register_backend(
    "executorch", "harness.backends.executorch_xnn:BACKEND", ("encoder", "llm"), aliases=("et",)
)
register_backend(
    "torch-compile",
    "harness.backends.torch_compile:BACKEND",
    ("encoder", "llm"),
    aliases=("inductor",),
)

__all__ = ["BACKENDS", "Backend", "get_backend", "names_for", "register_backend"]
