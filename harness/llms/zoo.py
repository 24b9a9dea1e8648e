"""The LLM zoo: decoder shapes by name, or read from a config file on disk.

A :class:`LLMSpec` is everything latency depends on (shapes, vocabulary, context length), and
nothing that it does not (weights, tokenizer). Zoo entries come from the public model
configs (see ``docs/llms.md``); any transformers ``config.json`` or mlx-lm model directory
of a supported architecture is accepted by path. Importing this module does not import torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from harness.errors import UserError, suggest
from harness.registry import Registry

#: Architectures the runners can build (transformers class / mlx-lm module per entry).
#: qwen3 and gemma3_text came with the open-VLM families (docs/vlms.md); SmolLM2 is llama.
ARCHS = ("qwen2", "llama", "qwen3", "gemma3_text")


@dataclass(frozen=True)
class LLMSpec:
    """Shape of a decoder-only LLM (Qwen2 or LLaMA family).

    ``quant_bits`` / ``quant_group_size`` are set only for mlx-lm directories that hold a
    quantized model; the torch runner ignores them.
    """

    name: str
    arch: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    max_positions: int
    rope_theta: float
    rms_norm_eps: float = 1e-6
    source: str = "zoo"
    quant_bits: int | None = None
    quant_group_size: int = 64
    #: per-head width when it is not hidden / heads (Qwen3, Gemma 3 set it explicitly)
    attn_head_dim: int | None = None
    #: local-attention window of the sliding layers (Gemma 3); None: every layer is global
    sliding_window: int | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise UserError(
                f"LLM {self.name!r}: architecture {self.arch!r} is not supported (supported: {', '.join(ARCHS)})"
            )
        for field_name in ("hidden", "heads", "kv_heads", "intermediate", "vocab", "max_positions"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserError(
                    f"LLM {self.name!r}: {field_name} must be a positive integer, got {value!r}"
                )
        if not isinstance(self.layers, int) or self.layers < 0:
            raise UserError(
                f"LLM {self.name!r}: layers must be an integer >= 0, got {self.layers!r}"
            )
        if self.attn_head_dim is not None:
            if (
                isinstance(self.attn_head_dim, bool)
                or not isinstance(self.attn_head_dim, int)
                or self.attn_head_dim <= 0
            ):
                raise UserError(
                    f"LLM {self.name!r}: head_dim must be a positive integer, got {self.attn_head_dim!r}"
                )
            if self.heads % self.kv_heads:
                raise UserError(
                    f"LLM {self.name!r}: heads ({self.heads}) must divide by kv_heads ({self.kv_heads})"
                )
        elif self.hidden % self.heads or self.heads % self.kv_heads:
            raise UserError(
                f"LLM {self.name!r}: hidden ({self.hidden}) must divide by heads ({self.heads}) "
                f"and heads by kv_heads ({self.kv_heads})"
            )

    @property
    def head_dim(self) -> int:
        return self.attn_head_dim if self.attn_head_dim is not None else self.hidden // self.heads

    @property
    def qkv_bias(self) -> bool:
        # Qwen2 has biases on q/k/v projections; LLaMA, Qwen3 and Gemma 3 have none.
        return self.arch == "qwen2"

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        attn = h * q + 2 * h * kv + q * h  # q, k, v, o
        if self.qkv_bias:
            attn += q + 2 * kv
        mlp = 3 * h * self.intermediate  # gate, up, down
        norms = 2 * h  # input and post-attention RMSNorm
        if self.arch in ("qwen3", "gemma3_text"):
            norms += 2 * self.head_dim  # q_norm, k_norm
        if self.arch == "gemma3_text":
            norms += 2 * h  # pre- and post-feedforward norms
        return attn + mlp + norms

    @property
    def non_layer_params(self) -> int:
        """Embedding, final norm and (if untied) LM head."""
        emb = self.vocab * self.hidden
        return emb + self.hidden + (0 if self.tied else emb)

    @property
    def n_params(self) -> int:
        return self.non_layer_params + self.layers * self.layer_params

    @property
    def params_b(self) -> float:
        """Parameter count in billions (tied embeddings counted once, as the model cards do)."""
        return self.n_params / 1e9

    def with_layers(self, layers: int) -> LLMSpec:
        """The same model with ``layers`` decoder layers (used by layer sampling)."""
        return replace(self, layers=layers)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["params_b"] = self.params_b
        return d

    def _shape_config(self) -> dict[str, Any]:
        """The transformers-style config keys both frameworks read."""
        extra: dict[str, Any] = {}
        if self.attn_head_dim is not None:
            extra["head_dim"] = self.attn_head_dim
        if self.sliding_window is not None:
            extra["sliding_window"] = self.sliding_window
        if self.arch != "gemma3_text":  # Gemma 3 keeps per-layer-type rope parameters
            extra["rope_theta"] = self.rope_theta
        return dict(
            **extra,
            hidden_size=self.hidden,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            intermediate_size=self.intermediate,
            vocab_size=self.vocab,
            tie_word_embeddings=self.tied,
            max_position_embeddings=self.max_positions,
            rms_norm_eps=self.rms_norm_eps,
        )

    def hf_config_dict(self) -> dict[str, Any]:
        """Keyword arguments for the transformers config class of ``arch``."""
        d = {**self._shape_config(), "hidden_act": "silu"}
        if self.arch == "gemma3_text":
            d.pop("hidden_act")
            d["hidden_activation"] = "gelu_pytorch_tanh"
            d["query_pre_attn_scalar"] = self.head_dim
        if self.arch == "llama":
            d.update(attention_bias=False, mlp_bias=False)
        return d

    def mlx_args(self) -> dict[str, Any]:
        """A config dict for mlx-lm's ``ModelArgs.from_dict`` of ``arch``."""
        return {"model_type": self.arch, **self._shape_config()}


def _qwen2(
    name: str, hidden: int, layers: int, heads: int, kv: int, inter: int, vocab: int, tied: bool
) -> LLMSpec:
    return LLMSpec(
        name, "qwen2", hidden, layers, heads, kv, inter, vocab, tied, 32768, 1_000_000.0, 1e-6
    )


LLMS: Registry[LLMSpec] = Registry("LLM")
LLMS.register(
    "qwen2-0.5b",
    _qwen2("qwen2-0.5b", 896, 24, 14, 2, 4864, 151936, True),
    aliases=(
        "qwen2-0.5b-instruct",
        "qwen2_0.5b",
        "qw2-0.5b",
        "qwen/qwen2-0.5b",
        "qwen/qwen2-0.5b-instruct",
    ),
)
LLMS.register(
    "qwen2-1.5b",
    _qwen2("qwen2-1.5b", 1536, 28, 12, 2, 8960, 151936, True),
    aliases=(
        "qwen2-1.5b-instruct",
        "qwen2_1.5b",
        "qw2-1.5b",
        "qwen/qwen2-1.5b",
        "qwen/qwen2-1.5b-instruct",
    ),
)
LLMS.register(
    "qwen2-7b",
    _qwen2("qwen2-7b", 3584, 28, 28, 4, 18944, 152064, False),
    aliases=("qwen2-7b-instruct", "qwen2_7b", "qw2-7b", "qwen/qwen2-7b", "qwen/qwen2-7b-instruct"),
)
LLMS.register(
    "vicuna-7b",
    # Vicuna-7B v1.5 (the LLaVA-1.5 decoder): LLaMA-2-7B shapes, 4096 context.
    LLMSpec("vicuna-7b", "llama", 4096, 32, 32, 32, 11008, 32000, False, 4096, 10000.0, 1e-5),
    # not "llama-7b": LLaMA(-2)-7B is another decoder (Table 6 lists it as 'L-2')
    aliases=("vicuna", "vicuna-7b-v1.5", "vic-7b", "lmsys/vicuna-7b-v1.5"),
)

# --- the LLMs behind today's open VLMs (public model configs; docs/vlms.md) ---------------
LLMS.register(
    "qwen2.5-0.5b",
    _qwen2("qwen2.5-0.5b", 896, 24, 14, 2, 4864, 151936, True),
    aliases=("qwen2.5-0.5b-instruct", "qwen/qwen2.5-0.5b-instruct"),
)
LLMS.register(
    "qwen2.5-1.5b",
    _qwen2("qwen2.5-1.5b", 1536, 28, 12, 2, 8960, 151936, True),
    aliases=("qwen2.5-1.5b-instruct", "qwen/qwen2.5-1.5b-instruct"),
)
LLMS.register(
    "qwen2.5-3b",
    _qwen2("qwen2.5-3b", 2048, 36, 16, 2, 11008, 151936, True),
    aliases=("qwen2.5-3b-instruct", "qwen/qwen2.5-3b-instruct"),
)
LLMS.register(
    "qwen2.5-7b",
    _qwen2("qwen2.5-7b", 3584, 28, 28, 4, 18944, 152064, False),
    aliases=("qwen2.5-7b-instruct", "qwen/qwen2.5-7b-instruct"),
)
LLMS.register(
    "qwen3-0.6b",
    LLMSpec(
        "qwen3-0.6b",
        "qwen3",
        1024,
        28,
        16,
        8,
        3072,
        151936,
        True,
        40960,
        1_000_000.0,
        1e-6,
        attn_head_dim=128,
    ),
    aliases=("qwen/qwen3-0.6b",),
)
LLMS.register(
    "qwen3-1.7b",
    LLMSpec(
        "qwen3-1.7b",
        "qwen3",
        2048,
        28,
        16,
        8,
        6144,
        151936,
        True,
        40960,
        1_000_000.0,
        1e-6,
        attn_head_dim=128,
    ),
    aliases=("qwen/qwen3-1.7b",),
)
LLMS.register(
    "smollm2-135m",
    LLMSpec("smollm2-135m", "llama", 576, 30, 9, 3, 1536, 49152, True, 8192, 100000.0, 1e-5),
    aliases=("smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"),
)
LLMS.register(
    "smollm2-360m",
    LLMSpec("smollm2-360m", "llama", 960, 32, 15, 5, 2560, 49152, True, 8192, 100000.0, 1e-5),
    aliases=("smollm2-360m-instruct", "huggingfacetb/smollm2-360m-instruct"),
)
LLMS.register(
    "smollm2-1.7b",
    LLMSpec("smollm2-1.7b", "llama", 2048, 24, 32, 32, 8192, 49152, True, 8192, 130000.0, 1e-5),
    aliases=("smollm2-1.7b-instruct", "huggingfacetb/smollm2-1.7b-instruct"),
)
LLMS.register(
    "gemma3-4b-text",
    LLMSpec(
        "gemma3-4b-text",
        "gemma3_text",
        2560,
        34,
        8,
        4,
        10240,
        262208,
        True,
        131072,
        1_000_000.0,
        1e-6,
        attn_head_dim=256,
        sliding_window=1024,
    ),
    aliases=("gemma-3-4b-text",),
)


def list_llms() -> list[str]:
    """Canonical names of the zoo LLMs."""
    return LLMS.names()


def tiny_spec(
    arch: str = "qwen2",
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    vocab: int = 256,
    max_positions: int = 4096,
    tied: bool = True,
) -> LLMSpec:
    """A small random-weight decoder for tests: milliseconds per prefill."""
    return LLMSpec(
        f"tiny-{arch}",
        arch,
        hidden,
        layers,
        heads,
        kv_heads,
        intermediate,
        vocab,
        tied,
        max_positions,
        10000.0,
        1e-6,
        source="tiny",
    )


def get_llm_spec(name_or_path: str | Path | LLMSpec) -> LLMSpec:
    """Resolve a zoo name/alias, a transformers ``config.json`` (or a directory holding one,
    e.g. an mlx-lm model directory) into an :class:`LLMSpec`.

    Raises :class:`UserError` for unknown names and for files that are not model configs.
    """
    if isinstance(name_or_path, LLMSpec):
        return name_or_path
    text = str(name_or_path)
    if text in LLMS:
        return LLMS.get(text)
    path = Path(text).expanduser()
    if path.exists():
        return spec_from_config_path(path)
    if "/" in text or text.endswith(".json"):
        raise UserError(
            f"LLM {text!r} is neither a zoo name ({', '.join(list_llms())}) nor an existing path"
        )
    raise UserError(suggest(text, list_llms(), "LLM"))


def spec_from_config_path(path: Path) -> LLMSpec:
    """Read a transformers/mlx-lm ``config.json`` (file or directory) into an LLMSpec."""
    cfg_file = path / "config.json" if path.is_dir() else path
    if not cfg_file.is_file():
        raise UserError(
            f"{str(path)!r} has no config.json; give a transformers config file or a model directory"
        )
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise UserError(f"{str(cfg_file)!r} is not a JSON model config: {e}") from e
    if not isinstance(cfg, dict):
        raise UserError(f"{str(cfg_file)!r} is not a model config (expected a JSON object)")
    # Multimodal checkpoints nest the decoder config (e.g. LLaVA's "text_config").
    if "text_config" in cfg and isinstance(cfg["text_config"], dict) and "hidden_size" not in cfg:
        cfg = {**cfg["text_config"], "quantization": cfg.get("quantization")}
    return spec_from_config_dict(
        cfg, name=path.name if path.is_dir() else path.parent.name or path.stem, source=str(path)
    )


def spec_from_config_dict(cfg: dict[str, Any], name: str, source: str = "dict") -> LLMSpec:
    """Build an LLMSpec from transformers-style config keys."""
    required = (
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "vocab_size",
    )
    missing = [k for k in required if k not in cfg]
    if missing:
        raise UserError(f"{source!r} is not a decoder model config: missing {', '.join(missing)}")
    arch = str(cfg["model_type"]).lower()
    if arch not in ARCHS:
        raise UserError(
            f"{source!r}: model_type {arch!r} is not supported (supported: {', '.join(ARCHS)})"
        )
    rope = cfg.get("rope_parameters") or {}
    if isinstance(rope.get("full_attention"), dict):  # per-layer-type rope (Gemma 3)
        rope = rope["full_attention"]
    default_theta = 1_000_000.0 if arch in ("qwen2", "qwen3", "gemma3_text") else 10000.0
    theta = cfg.get("rope_theta", rope.get("rope_theta", default_theta))
    quant = cfg.get("quantization") or cfg.get("quantization_config")
    bits = quant.get("bits") if isinstance(quant, dict) else None
    try:
        return LLMSpec(
            name=name,
            arch=arch,
            hidden=int(cfg["hidden_size"]),
            layers=int(cfg["num_hidden_layers"]),
            heads=int(cfg["num_attention_heads"]),
            kv_heads=int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]),
            intermediate=int(cfg["intermediate_size"]),
            vocab=int(cfg["vocab_size"]),
            tied=bool(cfg.get("tie_word_embeddings", False)),
            max_positions=int(cfg.get("max_position_embeddings", 4096)),
            rope_theta=float(theta),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            source=source,
            quant_bits=int(bits) if bits else None,
            quant_group_size=int(quant.get("group_size", 64)) if isinstance(quant, dict) else 64,
            attn_head_dim=_explicit_head_dim(cfg, arch),
            sliding_window=_sliding_window(cfg, arch),
        )
    except (TypeError, ValueError) as e:
        raise UserError(f"{source!r}: bad value in model config: {e}") from e


#: transformers' default per-head width for archs that carry an explicit ``head_dim``
_DEFAULT_HEAD_DIM = {"qwen3": 128, "gemma3_text": 256}


def _explicit_head_dim(cfg: dict[str, Any], arch: str) -> int | None:
    """``head_dim`` when the config sets one that differs from hidden / heads (else None)."""
    hd = cfg.get("head_dim", _DEFAULT_HEAD_DIM.get(arch))
    if hd is None:
        return None
    heads = int(cfg["num_attention_heads"])
    if (
        int(cfg["hidden_size"]) % heads == 0
        and int(cfg["hidden_size"]) // heads == int(hd)
        and arch not in _DEFAULT_HEAD_DIM
    ):
        return None
    return int(hd)


def _sliding_window(cfg: dict[str, Any], arch: str) -> int | None:
    """Gemma 3's local window (its other archs here run global attention in every layer)."""
    if arch != "gemma3_text":
        return None
    return int(cfg.get("sliding_window") or 4096)
