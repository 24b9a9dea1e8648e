"""What the deployment runtimes export, and the float32 eager reference they are checked against.

Shared by the ONNX Runtime, ExecuTorch and torch.compile backends:

- :class:`EncoderGraph`: images ``[B, 3, H, W]`` (tiles + overview as one batch) -> tokens
  ``[1, N, C]``, exactly the work the torch runner times;
- :class:`PrefillGraph`: ``inputs_embeds [1, T, hidden]`` (projected visual tokens followed by
  the prompt's embeddings) -> logits of the last position ``[1, 1, vocab]`` plus the fresh
  KV cache (keys and values of every layer), i.e. the work before the first token can be
  sampled, with the cache a decoder needs afterwards materialised as outputs;
- :class:`ProjectorGraph`: encoder features ``[1, N, in_dim]`` -> LLM embeddings;
- :func:`encoder_case` / :func:`prefill_case`: build a model with the harness's random
  weights, its inputs at the real pipeline's scale, and the float32 eager reference output;
- :func:`export_onnx`, :func:`lower_executorch`: exporters that turn any failure into
  :class:`ExportFailed` with the exporter's reason (the point is then stored as *skipped*).

Optional runtimes (onnxruntime, executorch, torchao) are imported inside the functions that
use them.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.encoders.tiling import parse_tiling, split_tiles
from harness.encoders.zoo import TokenEncoder, build_encoder, get_spec, validate_resolution
from harness.llms.zoo import LLMSpec


class ExportFailed(RuntimeError):
    """An exporter / lowering could not convert the model (-> a *skipped* point)."""


def short_reason(e: BaseException, limit: int = 400) -> str:
    """``Type: first line`` of an exception, shortened: the stored reason of a skipped point."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # the exporters colour their messages
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    text = f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporter chatter (warnings, torch._logs) while exporting."""
    import logging

    loggers = [
        logging.getLogger(n)
        for n in (
            "torch",
            "torch.onnx",
            "onnxscript",
            "onnx_ir",
            "executorch",
            "torch._dynamo",
            "torchao",
        )
    ]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, lv in zip(loggers, levels, strict=True):
                lg.setLevel(lv)


# --------------------------------------------------------------------------------- graphs


class EncoderGraph(nn.Module):
    """Images (tiles + overview as a batch) -> ``[1, N_total, C]`` tokens."""

    def __init__(self, encoder: TokenEncoder):
        super().__init__()
        self.module = encoder.module
        self._encoder = encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tok = self._encoder.tokens(images)
        return tok.reshape(1, -1, tok.shape[-1])


class PrefillGraph(nn.Module):
    """``inputs_embeds`` -> (last-position logits, k_0, v_0, ..., k_{L-1}, v_{L-1})."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs_embeds: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        model: Any = self.model
        cache = DynamicCache(config=model.config)
        out = model(
            inputs_embeds=inputs_embeds, past_key_values=cache, use_cache=True, logits_to_keep=1
        )
        kv: list[torch.Tensor] = []
        for layer in getattr(out.past_key_values, "layers", []):
            kv += [layer.keys, layer.values]
        return (out.logits, *kv)


class ProjectorGraph(nn.Module):
    def __init__(self, projector: nn.Module):
        super().__init__()
        self.projector = projector

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projector(features)


# ---------------------------------------------------------------------------------- cases


def _torch_runner_attr(side: str, attr: str) -> Any:
    """The torch runner's input builders (``make_images``, ``prepare_inputs``): the same
    inputs the eager runner times."""
    import importlib

    module = {
        "encoder": "harness.backends.torch.encoder",
        "prefill": "harness.backends.torch.prefill",
    }[side]
    return getattr(importlib.import_module(module), attr)


@dataclass
class EncoderCase:
    """A float32 encoder graph, its input, and the eager reference output."""

    name: str
    graph: EncoderGraph
    #: [images, 3, tile, tile], float32, CLIP-normalised; for a module with ``prepare``
    #: (an open-VLM vision tower) what ``prepare`` made of them (tiles, flattened patches)
    inputs: torch.Tensor
    reference: torch.Tensor  # [1, N, C] float32
    tile: int
    images: int
    params_m: float
    build_s: float

    @property
    def tokens(self) -> int:
        return int(self.reference.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.reference.shape[2])


def encoder_case(
    name: str,
    resolution: int,
    tiling: str = "none",
    *,
    seed: int = 0,
    weights: str | None = None,
    channels_last: bool = False,
) -> EncoderCase:
    """Build encoder ``name`` in float32, its inputs and the eager reference tokens."""
    make_images = _torch_runner_attr("encoder", "make_images")
    spec = get_spec(name)
    t = parse_tiling(tiling)
    tile = validate_resolution(spec.name, resolution, t.text)
    t0 = time.perf_counter()
    encoder = build_encoder(spec.name, tile, seed=seed, weights=weights)
    if channels_last:
        encoder.module = encoder.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    graph = EncoderGraph(encoder).eval()
    build_s = time.perf_counter() - t0
    images = make_images(t, resolution, torch.device("cpu"), torch.float32, seed)
    inputs = (split_tiles(images, t) if t.tiled else images).contiguous()
    prepare = getattr(encoder.module, "prepare", None)
    if callable(prepare):
        # a VLM family's own tiling / patchifying (harness/vlm/modules.py), exactly as the
        # torch runner does it: preprocessing outside the graph, so the exported / compiled
        # graph takes the prepared tiles or patches and times only ``forward``
        with torch.no_grad():
            inputs = prepare(inputs).contiguous()
    with torch.inference_mode():
        reference = graph(inputs).float()
    return EncoderCase(
        spec.name, graph, inputs, reference, tile, t.images, encoder.params() / 1e6, build_s
    )


@dataclass
class PrefillCase:
    """A float32 decoder (all or ``layers`` of its layers), its inputs and the reference."""

    spec: LLMSpec
    graph: PrefillGraph
    embeds: torch.Tensor  # [1, T, hidden] float32: projected visual tokens + prompt embeddings
    reference: torch.Tensor  # [1, 1, vocab] float32 last-position logits
    layers: int
    projector: ProjectorGraph
    features: torch.Tensor  # [1, tokens, encoder_dim]
    build_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def prefill_case(
    spec: LLMSpec,
    visual_tokens: int,
    prompt_tokens: int,
    *,
    encoder_dim: int,
    layers: int | None = None,
    seed: int = 0,
) -> PrefillCase:
    """Build ``spec`` (or its first ``layers`` layers) in float32 with the prefill inputs
    the torch runner uses (projected encoder features + prompt embeddings) and the reference."""
    from harness.llms.build import build_torch_llm

    prepare_inputs = _torch_runner_attr("prefill", "prepare_inputs")

    t0 = time.perf_counter()
    built = build_torch_llm(spec, dtype="float32", layers=layers, seed=seed)
    inputs = prepare_inputs(spec, visual_tokens, prompt_tokens, encoder_dim=encoder_dim, seed=seed)
    with torch.inference_mode():
        llm: Any = built.model
        embed = llm.get_input_embeddings()
        prompt = embed(inputs.prompt_ids) if prompt_tokens else inputs.visual[:, :0]
        embeds = torch.cat([inputs.visual, prompt], dim=1).contiguous()
        graph = PrefillGraph(built.model).eval()
        reference = graph(embeds)[0].float()
    return PrefillCase(
        spec,
        graph,
        embeds,
        reference,
        built.layers,
        ProjectorGraph(inputs.projector).eval(),
        inputs.features,
        time.perf_counter() - t0,
        {"input_scale": inputs.input_scale},
    )


# ------------------------------------------------------------------------------ exporters


def export_onnx(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: str | Path,
    input_names: list[str],
    output_names: list[str] | None = None,
) -> float:
    """``torch.onnx.export(dynamo=True)`` to ``path`` (weights as external data next to it
    when over 2 GB); returns export seconds. Any failure -> :class:`ExportFailed`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        with quiet(), torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                verbose=False,
                input_names=input_names,
                output_names=output_names,
                report=False,
                optimize=True,
            )
            if program is None:
                raise RuntimeError("torch.onnx.export returned no program")
            nbytes = sum(p.numel() * p.element_size() for p in module.parameters())
            program.save(str(path), external_data=nbytes > 1.8 * 2**30)
            del program
    except Exception as e:
        raise ExportFailed(f"onnx export failed: {short_reason(e)}") from e
    return time.perf_counter() - t0


def remove_onnx(path: str | Path) -> None:
    """Delete an exported model and its external-data file(s)."""
    p = Path(path)
    # exact names only: a wildcard on the stem once deleted another model's data file
    # (``x-int8.onnx`` took ``x-int8q.onnx.data`` with it)
    for f in [p, p.parent / (p.name + ".data"), p.parent / (p.stem + ".data")]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(f)


def lower_executorch(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    delegate: str = "xnnpack",
    quantize: str | None = None,
) -> tuple[bytes, float, dict[str, Any]]:
    """Export with ``torch.export`` and lower to an ExecuTorch program with ``delegate``'s
    partitioner (``xnnpack``, ``coreml``, ``mps``); ``quantize="int8"`` applies XNNPACK's
    dynamic int8 quantization (PT2E) to linear layers first. Returns (program bytes, seconds,
    info). Any failure -> :class:`ExportFailed`."""
    t0 = time.perf_counter()
    info: dict[str, Any] = {"delegate": delegate}
    try:
        with quiet(), torch.inference_mode(False), torch.no_grad():
            from executorch.exir import to_edge_transform_and_lower

            if quantize == "int8":
                from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                    XNNPACKQuantizer,
                    get_symmetric_quantization_config,
                )
                from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

                quantizer = XNNPACKQuantizer().set_module_type(
                    nn.Linear,
                    get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True),
                )
                captured = torch.export.export(module, args).module()
                prepared = prepare_pt2e(captured, quantizer)  # type: ignore[arg-type]
                prepared(*args)
                module = convert_pt2e(prepared)  # type: ignore[assignment]
                info["quantization"] = (
                    "XNNPACKQuantizer dynamic int8 on nn.Linear (per-channel weights)"
                )
            ep = torch.export.export(module, args)
            partitioner = _et_partitioner(delegate)
            edge = to_edge_transform_and_lower(ep, partitioner=[partitioner])
            graph = edge.exported_program().graph_module.graph
            delegated = sum(
                1
                for n in graph.nodes
                if n.op == "call_function" and "executorch_call_delegate" in str(n.target)
            )
            leftover = sum(
                1
                for n in graph.nodes
                if n.op == "call_function"
                and "executorch_call_delegate" not in str(n.target)
                and "getitem" not in str(n.target)
            )
            program = edge.to_executorch()
            buffer = bytes(program.buffer)
        info.update({"delegate_calls": delegated, "portable_ops": leftover})
    except Exception as e:
        raise ExportFailed(f"executorch lowering ({delegate}) failed: {short_reason(e)}") from e
    return buffer, time.perf_counter() - t0, info


def _et_partitioner(delegate: str) -> Any:
    if delegate == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    if delegate == "coreml":
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        return CoreMLPartitioner()
    if delegate == "mps":
        from executorch.backends.apple.mps.partition import MPSPartitioner

        return MPSPartitioner()
    raise ValueError(f"unknown ExecuTorch delegate {delegate!r}")


def torch_quantize_int8(module: nn.Module) -> str:
    """int8 dynamic quantization of ``module``'s Linear layers in place (torchao: int8
    weights per channel, activations quantized per token at run time). Returns the method."""
    with quiet():
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(module, Int8DynamicActivationInt8WeightConfig())
    return "torchao Int8DynamicActivationInt8Weight (nn.Linear only)"


def count_linears(module: nn.Module) -> int:
    return sum(1 for m in module.modules() if isinstance(m, nn.Linear))


__all__ = [
    "EncoderCase",
    "EncoderGraph",
    "ExportFailed",
    "PrefillCase",
    "PrefillGraph",
    "ProjectorGraph",
    "count_linears",
    "encoder_case",
    "export_onnx",
    "lower_executorch",
    "prefill_case",
    "quiet",
    "remove_onnx",
    "short_reason",
    "torch_quantize_int8",
]
