"""One interface for an open-VLM architecture family, and the config checks all families share.

A :class:`VLM` is data: a name, its family, the architecture config (the keys of the
checkpoint's ``config.json``: ``vision_config``, ``text_config`` and the family's own
top-level keys), the processor's resolution policy (``processor``) and published numbers
(``published``). A :class:`VLMFamily` turns it into the two things the harness already
measures (see ``harness/vlm/register.py``):

- an encoder (:class:`harness.encoders.zoo.EncoderSpec`): the vision tower plus the
  family's token reduction (pixel shuffle, 2 x 2 merge, pooling, AnyRes packing), timed by the
  existing encoder runner; its ``token_rule`` is the family's visual-token rule;
- an LLM (:class:`harness.llms.zoo.LLMSpec`) from ``text_config``, timed by the existing
  prefill runner. The harness's projector (two-layer GELU MLP, reduced channels -> LLM hidden)
  stands in for the family's connector MLP (docs/vlms.md lists where they differ).

Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

#: Keys any transformers config.json may carry that do not describe the architecture.
GENERIC_KEYS = frozenset(
    {
        "_name_or_path",
        "architectures",
        "auto_map",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "model_type",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "sep_token_id",
        "decoder_start_token_id",
        "use_cache",
        "initializer_range",
        "initializer_factor",
        "attention_dropout",
        "hidden_dropout",
        "tie_word_embeddings",
        "quantization_config",
        "id2label",
        "label2id",
        "problem_type",
        "return_dict",
        "output_attentions",
        "output_hidden_states",
        "chunk_size_feed_forward",
        "is_encoder_decoder",
        "tokenizer_class",
        "task_specific_params",
        "finetuning_task",
        "prefix",
        "rope_scaling",
        "rope_theta",
        "rope_parameters",
        "attn_implementation",
        "_attn_implementation_autoset",
        "use_return_dict",
        "torchscript",
        "pruned_heads",
        "add_cross_attention",
        "tie_encoder_decoder",
        "is_decoder",
        "cross_attention_hidden_size",
        "max_window_layers",
        "use_sliding_window",
        "sliding_window",
        "layer_types",
        "bos_token",
        "eos_token",
    }
)


@dataclass
class VLM:
    """A VLM described by its architecture config (no weights)."""

    name: str
    family: str
    config: dict[str, Any]
    processor: dict[str, Any] = field(default_factory=dict)
    published: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = "config"
    #: resolutions a sweep measures by default
    resolutions: list[int] = field(default_factory=list)
    #: refuse config keys the installed transformers does not know (a newer checkpoint)
    strict_keys: bool = True

    def get(self, dotted: str, default: Any = None) -> Any:
        """A config value by dotted path (``vision_config.hidden_size``), or ``default``."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def need(self, dotted: str) -> Any:
        """A config value the family cannot do without; a one-line UserError naming it otherwise."""
        value = self.get(dotted)
        if value is None:
            raise UserError(f"VLM {self.name!r} ({self.family}): config is missing {dotted!r}")
        return value

    def proc(self, key: str, default: Any) -> Any:
        """A processor (resolution policy) setting, else the family's default."""
        return self.processor.get(key, default)

    @property
    def vision(self) -> dict[str, Any]:
        return dict(self.config.get("vision_config") or {})

    @property
    def text(self) -> dict[str, Any]:
        return dict(self.config.get("text_config") or {})


class VLMFamily(ABC):
    """An architecture family: config checks, the visual-token rule and the vision builder.

    Subclasses set ``name``, ``model_type`` (transformers), ``config_class`` (dotted path of the
    transformers config class, used to check for unknown keys) and ``required`` (dotted config
    paths the family reads), and implement the methods below. Sizes are square ``R x R``
    images (the sweep axis); ``tokens_hw`` takes any ``H x W``.
    """

    name: str = ""
    model_type: str = ""
    config_class: str = ""
    required: tuple[str, ...] = ()
    #: top-level keys older checkpoints carry that the current config class has dropped
    legacy_keys: frozenset[str] = frozenset()
    aliases: tuple[str, ...] = ()

    # -- config checks --------------------------------------------------------------------
    def check(self, vlm: VLM, strict_keys: bool = True) -> None:
        """Refuse a config missing a field the family needs or holding keys transformers 5.24 does not know."""
        for path in self.required:
            vlm.need(path)
        if strict_keys:
            self.check_keys(vlm)

    def known_keys(self) -> dict[str, set[str]]:
        """Keys the installed transformers knows, per level ('' top, 'vision_config', 'text_config')."""
        from harness.registry import import_target

        cls = import_target(self.config_class)
        cfg = cls()
        top = set(cfg.to_dict()) | set(GENERIC_KEYS) | set(self.legacy_keys)
        out = {"": top}
        for sub in ("vision_config", "text_config"):
            sub_cfg = getattr(cfg, sub, None)
            if sub_cfg is not None:
                out[sub] = set(sub_cfg.to_dict()) | set(GENERIC_KEYS)
                top |= out[sub]  # older checkpoints repeat the text keys at the top level
        return out

    def check_keys(self, vlm: VLM) -> None:
        import transformers

        known = self.known_keys()
        for level, keys in known.items():
            node = vlm.config if not level else vlm.config.get(level) or {}
            for key in node:
                if key not in keys and not (not level and key in known):
                    where = f"{level}.{key}" if level else key
                    raise UserError(
                        f"VLM {vlm.name!r}: config key {where!r} is unknown to transformers {transformers.__version__}'s "
                        f"{self.config_class.rsplit(':', 1)[-1]} (a config from a newer version?); remove it, or set "
                        "strict_keys: false to ignore it knowingly"
                    )

    def hf_config(self, vlm: VLM) -> Any:
        """The transformers config object (defaults filled in by the installed transformers)."""
        from harness.registry import import_target

        cls = import_target(self.config_class)
        kwargs = {k: v for k, v in vlm.config.items() if k != "model_type"}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError, KeyError) as e:
            raise UserError(f"VLM {vlm.name!r}: transformers rejects its config: {e}") from e

    # -- the resolution policy and its tokens ---------------------------------------------
    @abstractmethod
    def valid_sizes(self, vlm: VLM) -> list[int]:
        """Square image sides the policy produces (for messages, presets and tests)."""

    def check_size(self, vlm: VLM, size: int) -> None:
        """UserError with the nearest valid sizes when the policy cannot run an ``size x size`` image."""
        from harness.vlm.rules import refuse

        valid = self.valid_sizes(vlm)
        if size not in valid:
            raise refuse(vlm.name, size, self.size_rule(vlm), valid)

    @abstractmethod
    def size_rule(self, vlm: VLM) -> str:
        """The policy in a few words, for error messages."""

    @abstractmethod
    def tokens_hw(self, vlm: VLM, h: int, w: int) -> int:
        """Visual tokens the LLM receives for an ``h x w`` image (after the family's resize)."""

    def tokens(self, vlm: VLM, size: int) -> int:
        return self.tokens_hw(vlm, size, size)

    @abstractmethod
    def images(self, vlm: VLM, size: int) -> int:
        """Images (tiles, base/global/thumbnail) the vision tower runs for one ``size`` image."""

    @abstractmethod
    def out_dim(self, vlm: VLM) -> int:
        """Channels per visual token after the family's reduction (the connector's input)."""

    @abstractmethod
    def connector_params(self, vlm: VLM) -> int:
        """Parameters of the family's real connector (for the parameter count)."""

    def native_size(self, vlm: VLM) -> int:
        return self.valid_sizes(vlm)[0]

    # -- models ---------------------------------------------------------------------------
    @abstractmethod
    def build_vision(self, vlm: VLM, size: int) -> nn.Module:
        """The vision tower + token reduction for ``size`` images (built on whatever device is current).

        The module's ``prepare(images[1,3,R,R])`` turns a normalised image into its input
        (tiles, patches: preprocessing, not timed); ``forward`` returns ``[1, tokens, out_dim]``.
        """

    def text_config(self, vlm: VLM) -> dict[str, Any]:
        """The decoder's transformers-style config keys (for :func:`spec_from_config_dict`)."""
        return vlm.text

    def llm_arch(self, vlm: VLM) -> str:
        """The harness LLM architecture of the decoder (``text_config.model_type`` by default)."""
        return str(self.text_config(vlm).get("model_type") or "")
