"""Parity of eager PyTorch in a low precision (bfloat16 / float16) with float32 eager.

The deployment runtimes check their output against float32 eager before a latency is stored
(:mod:`harness.backends.portable`); eager PyTorch in bf16 / fp16 is a deployment choice too,
so the torch runner holds it to the same thresholds (:mod:`harness.backends.parity`). The
model is built in float32 with the harness's seeded weights (exactly the weights the timed
low-precision model was cast from), run once in float32 for the reference and once converted
to the timed precision on the same inputs; a failure raises
:class:`~harness.backends.parity.ParityError`, which the engine stores as a *failed* point
with the numbers.

Prefill: the whole decoder when its float32 copy fits in memory, else the first ``k`` layers
(the layer-sampled count when the prefill was sampled, else 2): a broken conversion
(overflow, a layer that does not run in the precision) shows in any layer.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from harness.backends.parity import ParityResult, check

if TYPE_CHECKING:
    from harness.llms.zoo import LLMSpec

#: decoder layers compared when the float32 decoder does not fit in memory
FALLBACK_LAYERS = 2


def _numpy(x: Any) -> Any:
    if isinstance(x, (tuple, list)):
        x = x[0]
    return x.detach().float().cpu().numpy()


def _converted(module: Any, inputs: Any, precision: str, device: str) -> Any:
    import torch

    from harness.denormal import flush_denormal
    from harness.devices import torch_dtype

    dtype = torch_dtype(precision, device)
    low = copy.deepcopy(module).to(device=device, dtype=dtype).eval()
    with torch.inference_mode(), flush_denormal(True, torch.device(device).type):
        return low(inputs.to(device=device, dtype=dtype))


def encoder_parity(
    name: str,
    resolution: int,
    tiling: str,
    precision: str,
    device: str = "cpu",
    *,
    seed: int = 0,
    weights: str | None = None,
) -> ParityResult:
    """Encoder tokens ``[1, N, C]`` in ``precision`` vs float32 eager, on the timed inputs."""
    from harness.backends.graphs import encoder_case

    case = encoder_case(name, resolution, tiling, seed=seed, weights=weights)
    out = _converted(case.graph, case.inputs, precision, device)
    return check(_numpy(out), _numpy(case.reference), precision, f"torch {name}@{resolution}")


def prefill_parity(
    spec: LLMSpec,
    tokens: int,
    prompt_tokens: int,
    precision: str,
    device: str = "cpu",
    *,
    encoder_dim: int,
    sample_layers: int | None = None,
    seed: int = 0,
) -> tuple[ParityResult, ParityResult]:
    """(prefill last-position logits, projector output) in ``precision`` vs float32 eager."""
    from harness.backends.graphs import prefill_case
    from harness.errors import UserError
    from harness.llms.build import check_memory

    layers: int | None = None
    if sample_layers is not None and sample_layers < spec.layers:
        layers = int(sample_layers)
    else:
        try:
            # the float32 reference and its converted copy both live in memory
            check_memory(spec, tokens=tokens + prompt_tokens, dtype="float32", device="cpu")
        except UserError:
            layers = min(FALLBACK_LAYERS, spec.layers)
    case = prefill_case(
        spec, tokens, prompt_tokens, encoder_dim=encoder_dim, layers=layers, seed=seed
    )
    out = _converted(case.graph, case.embeds, precision, device)
    what = f"torch {spec.name} prefill ({case.layers} layers)"
    prefill = check(_numpy(out), _numpy(case.reference), precision, what)
    return prefill, _projector_check(case.projector, case.features, precision, device)


def _projector_check(module: Any, features: Any, precision: str, device: str) -> ParityResult:
    import torch

    with torch.inference_mode():
        reference = module(features)
    out = _converted(module, features, precision, device)
    what = f"torch projector {features.shape[-1]}->{reference.shape[-1]}"
    return check(_numpy(out), _numpy(reference), precision, what)


def projector_parity(
    in_dim: int, hidden: int, tokens: int, precision: str, device: str = "cpu", *, seed: int = 0
) -> ParityResult:
    """The projector alone in ``precision`` vs float32 eager, on the timed kind of inputs."""
    from harness.backends.graphs import ProjectorGraph
    from harness.llms.projector import build_projector, encoder_features

    module = ProjectorGraph(build_projector(in_dim, hidden, seed=seed + 1)).eval()
    features = encoder_features(tokens, in_dim, seed=seed + 2)
    return _projector_check(module, features, precision, device)


__all__ = ["FALLBACK_LAYERS", "encoder_parity", "prefill_parity", "projector_parity"]
