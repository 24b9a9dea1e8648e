"""Dispatch a sweep task to the runner its backend names (torch, coreml, mlx, fake).

This is the only place the sweep touches the runners, so adding a backend means one branch
here. Real runners are imported lazily: a ``fake`` sweep never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.errors import UserError
from harness.protocol import Measurement, Protocol
from harness.sweep import fake
from harness.sweep.configs import SweepConfig
from harness.sweep.plan import EncoderTask, PrefillTask, ProjectorTask


@dataclass
class Outcome:
    """What one task produced, ready for ``Store.add_measurement``."""

    measurement: Measurement
    extra: dict[str, Any] = field(default_factory=dict)
    build_s: float | None = None
    estimated: bool = False
    #: a by-product measurement of another task (the projector measured with a prefill)
    side: dict[tuple, Outcome] = field(default_factory=dict)


def protocol_of(cfg: SweepConfig) -> Protocol:
    """The sweep's protocol config as a validated :class:`Protocol` (same fields by name)."""
    from dataclasses import asdict

    return Protocol(**asdict(cfg.protocol))


class Runners:
    """Measures tasks for one sweep config; caches LLM specs and sampling decisions."""

    def __init__(self, cfg: SweepConfig, llm_specs: dict[str, Any]):
        self.cfg = cfg
        self.protocol = protocol_of(cfg)
        self.llm_specs = llm_specs  # canonical name -> LLMSpec
        from harness.llms.zoo import LLMS

        self.llm_specs_by_label = {label: LLMS.canonical(llm.name) if llm.name in LLMS else llm.name
                                   for label, llm in cfg.llms.items()}
        self.round = 0

    # -- pairing --------------------------------------------------------------------------
    def _llm_names(self, labels: list[str]) -> list[str]:
        return [self.llm_specs_by_label[x] for x in labels if x in self.llm_specs_by_label]

    def encoder_pairs(self, label: str) -> dict[str, Any]:
        """``pairs_with`` for an encoder restricted to some LLMs (TTFT joins only those)."""
        llms = self.cfg.encoders[label].llms
        return {"pairs_with": self._llm_names(llms)} if llms is not None else {}

    def llm_pairs(self, llm_label: str) -> dict[str, Any]:
        """``pairs_with`` for a VLM's own decoder: the encoders that name it."""
        if llm_label not in self.cfg.vlms:
            return {}
        encs = sorted({e.name for e in self.cfg.encoders.values() if e.llms is not None and llm_label in e.llms})
        return {"pairs_with": encs}

    def encoder(self, task: EncoderTask) -> Outcome:
        out = self._encoder(task)
        out.extra.update(self.encoder_pairs(task.label))
        return out

    # -- encoders -------------------------------------------------------------------------
    def _encoder(self, task: EncoderTask) -> Outcome:
        b = self.cfg.backend
        enc_cfg = self.cfg.encoders[task.label]
        if b.encoder_backend == "fake":
            from harness.encoders.tiling import parse_tiling

            t = parse_tiling(task.tiling)
            tile = t.tile_resolution(task.resolution)
            m = fake.fake_encoder(task.name, tile, t.images, self.protocol, self.round)
            return Outcome(m, {"fake": True, "tile_resolution": tile, "images": t.images, "out_dim": task.out_dim},
                           build_s=0.0)
        if b.encoder_backend == "coreml":
            from harness.encoders.coreml_runner import measure_encoder_coreml

            r = measure_encoder_coreml(
                task.name, task.resolution, task.tiling, compute_units=b.compute_units,
                precision=b.coreml_precision, protocol=self.protocol, weights=enc_cfg.weights,
            )
        else:
            from harness.encoders.torch_runner import measure_encoder

            r = measure_encoder(
                task.name, task.resolution, task.tiling, device=b.device, dtype=b.dtype,
                protocol=self.protocol, channels_last=b.channels_last, compile=b.compile,
                batch_tiles=self.cfg.batch_tiles, weights=enc_cfg.weights, seed=self.cfg.seed,
            )
        if r.tokens != task.tokens:
            raise RuntimeError(f"{task.name} produced {r.tokens} tokens, the plan expected {task.tokens}")
        return Outcome(r.measurement, {**r.extra, "params_m": r.params_m, "out_dim": r.out_dim}, build_s=r.build_s)

    # -- LLM side -------------------------------------------------------------------------
    def sample_layers_for(self, llm: str) -> int | None:
        """k layers to build and time, or None for the whole model."""
        if self.cfg.sample_layers is not None:
            return self.cfg.sample_layers
        if not self.cfg.auto_sample or self.cfg.backend.llm_backend == "fake":
            return None
        spec = self.llm_specs[llm]
        if spec.params_b > self.cfg.auto_sample_above_b:
            return min(self.cfg.auto_sample_k, spec.layers)
        from harness.llms.build import check_memory

        try:
            check_memory(spec, tokens=4096, dtype=self.cfg.backend.llm_dtype, device=self.cfg.backend.device)
        except UserError:
            return min(self.cfg.auto_sample_k, spec.layers)
        return None

    def prefill(self, task: PrefillTask, in_dim: int) -> Outcome:
        """Prefill for (LLM, tokens); the projector for ``in_dim`` comes along as a side result."""
        out = self._prefill(task, in_dim)
        out.extra.update(self.llm_pairs(task.llm_label))
        return out

    def _prefill(self, task: PrefillTask, in_dim: int) -> Outcome:
        b = self.cfg.backend
        spec = self.llm_specs[task.llm]
        if b.llm_backend == "fake":
            m = fake.fake_prefill(task.llm, spec.params_b, task.tokens + task.prompt_tokens, self.protocol, self.round)
            proj = fake.fake_projector(task.llm, in_dim, spec.hidden, task.tokens, self.protocol, self.round)
            side = {("projector", task.llm, task.tokens, in_dim): Outcome(proj, {"in_dim": in_dim, "fake": True})}
            return Outcome(m, {"fake": True, "params_b": spec.params_b, "encoder_dim": in_dim}, build_s=0.0, side=side)
        from harness.llms.torch_prefill import measure_prefill

        k = self.sample_layers_for(task.llm)
        r = measure_prefill(
            spec, task.tokens, task.prompt_tokens, encoder_dim=in_dim, backend=b.llm_backend,
            device=b.device, dtype=b.llm_dtype, protocol=self.protocol, sample_layers=k,
            **({"prefill_step_size": b.prefill_step_size, "quantize_bits": b.mlx_quantize_bits}
               if b.llm_backend == "mlx" else {}),
        )
        extra = {
            **r.extra,
            "encoder_dim": in_dim,  # the projector_ms below is for this encoder width
            "projector_ms": r.projector_ms,
            "sampled_layers": r.sampled_layers,
            "total_layers": r.total_layers,
            "params_b": r.params_b,
        }
        side = {
            ("projector", task.llm, task.tokens, in_dim): Outcome(
                r.projector, {"in_dim": in_dim, "out_dim": spec.hidden}, build_s=0.0
            )
        }
        return Outcome(r.measurement, extra, build_s=r.build_s, estimated=r.estimated, side=side)

    def projector(self, task: ProjectorTask) -> Outcome:
        b = self.cfg.backend
        spec = self.llm_specs[task.llm]
        if b.llm_backend == "fake":
            m = fake.fake_projector(task.llm, task.in_dim, spec.hidden, task.tokens, self.protocol, self.round)
            return Outcome(m, {"in_dim": task.in_dim, "fake": True}, build_s=0.0)
        from harness.llms.projector import measure_projector

        m = measure_projector(
            task.in_dim, spec.hidden, task.tokens, backend=b.llm_backend, device=b.device,
            dtype=b.llm_dtype, protocol=self.protocol,
        )
        return Outcome(m, {"in_dim": task.in_dim, "out_dim": spec.hidden}, build_s=0.0)
