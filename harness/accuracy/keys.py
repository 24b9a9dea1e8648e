"""The one alias table: canonical encoder / LLM / tiling / recipe / benchmark names.

Every accuracy or latency row is keyed by :class:`Key` = (encoder, resolution, llm, tiling,
recipe). Names arrive spelled many ways (``FastViTHD``, ``C.N-L``, ``Qw.2``, ``0.5+0.6``);
everything goes through :func:`normalize_key` so the join never misses a match because of
spelling. Unknown names raise :class:`~harness.errors.UserError` with a suggestion, unless the
caller passes ``strict=False`` (custom encoders), in which case the name is slugified.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from harness.errors import UserError, suggest
from harness.schema import AVG5, KEY_FIELDS  # noqa: F401 (re-exported)

# canonical -> aliases, derived from the zoos (harness/encoders/zoo.py, harness/llms/zoo.py:
# every zoo name and alias) plus the spellings papers and eval tools use and the paper-only
# models below. Aliases are matched case-insensitively after trimming, except the few in
# _CASE_SENSITIVE where the paper distinguishes names only by case.
_PAPER_ENCODER_SPELLINGS: dict[str, tuple[str, ...]] = {
    "fastvithd": ("FastViTHD", "FastViT-HD", "fastvit_hd", "fastvit_mci3", "mci3"),
    "fastvit": ("FastViT", "MCi2", "mobileclip-mci2", "fastvit_mci2", "mobileclip_s2"),
    "vit-l-14": (
        "ViT-L/14",
        "ViT-L-14",
        "vit_l_14",
        "clip-vit-l-14",
        "openai/clip-vit-large-patch14-336",
        "clip-vit-large-patch14-336",
        "vit-large-patch14",
    ),
    # Table 6 writes SigLIP-SO400M as 'ViT-SO400M' (430M params, 729 tokens at 384: the same
    # encoder), so both spellings map to one canonical name.
    "siglip-so400m": (
        "SigLIP-SO400M",
        "SigLIP-SO400M/14",
        "ViT-SO400M",
        "vit-so400m",
        "siglip-so400m-patch14-384",
        "google/siglip-so400m-patch14-384",
    ),
    "convnext-l": ("ConvNeXt-L", "ConvNeXT-L", "C.N-L", "CN-L", "convnext_large", "convnext-large"),
    "convnext-xxl": (
        "ConvNeXt-XXL",
        "ConvNeXT-XXL",
        "C.N-XXL",
        "CN-XXL",
        "convnext_xxlarge",
        "convnext-xxlarge",
    ),
    # Paper-only encoders (Tables 3 and 6): no runner, but rows must still be keyed.
    "vit-h": ("ViT-H", "ViT-H/14", "vit-h-14"),
    "vitamin-l": ("ViTamin-L",),
    "vit-g-14": ("EVA-ViT-g/14", "eva-vit-g"),
    "vit-bigg-14": ("ViT-bigG/14", "OpenCLIP-ViT-bigG"),
    "dinov2-vit-l-14": ("DINOv2-ViT-L/14", "dinov2-l"),
}

#: Aliases whose case matters: Table 6 has both 'ViT-g/14' (InstructBLIP, 1012M) and
#: 'ViT-G/14' (Qwen-VL, 1844M).
_CASE_SENSITIVE: dict[str, str] = {"ViT-g/14": "vit-g-14", "ViT-G/14": "vit-bigg-14"}

_PAPER_LLM_SPELLINGS: dict[str, tuple[str, ...]] = {
    "qwen2-0.5b": ("Qwen2-0.5B", "Qwen/Qwen2-0.5B-Instruct", "qwen2-0.5b-instruct", "qwen2_0.5b"),
    "qwen2-1.5b": ("Qwen2-1.5B", "Qwen/Qwen2-1.5B-Instruct", "qwen2-1.5b-instruct", "qwen2_1.5b"),
    "qwen2-7b": ("Qwen2-7B", "Qwen/Qwen2-7B-Instruct", "qwen2-7b-instruct", "qwen2_7b"),
    "vicuna-7b": ("Vicuna-7B", "vicuna-7b-v1.5", "lmsys/vicuna-7b-v1.5", "Vic.", "vicuna"),
    # Paper-only decoders (Table 6).
    "qwen1.5-0.5b": ("Qwen1.5-0.5B", "Qw.1.5"),
    "qwen-7b": ("Qwen-7B", "Qw."),
    "mobilellama-1.4b": ("MobileLLaMA-1.4B", "ML."),
    "deepseek-llm-1.3b": ("DeepSeek-LLM-1.3B", "DS."),
    "llama-2-7b": ("LLaMA-2-7B", "Llama-2-7b", "L-2"),
    "llama-3-8b": ("LLaMA-3-8B", "Llama-3-8B", "Meta-Llama-3-8B", "L-3"),
    # MM1's decoder is not named in Table 6 ('-'); the group tells only its size class.
    "unreported-1-2b": (),
    "unreported-7b": (),
    # Encoder-only rows (Table 3) have no decoder.
    "none": (),
}


def _with_zoo(
    registry_aliases: dict[str, tuple[str, ...]], spellings: dict[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    """The zoo's names and aliases, each extended by the extra spellings of that name."""
    out = {name: tuple(aliases) for name, aliases in registry_aliases.items()}
    for name, extra in spellings.items():
        out[name] = tuple(dict.fromkeys((*out.get(name, ()), *extra)))
    return out


def _zoo_encoders() -> dict[str, tuple[str, ...]]:
    from harness.encoders.zoo import BUILTIN_ORDER
    from harness.encoders.zoo import ENCODERS as ZOO

    aliases = ZOO.aliases()
    return {name: aliases[name] for name in BUILTIN_ORDER}


def _zoo_llms() -> dict[str, tuple[str, ...]]:
    from harness.llms.zoo import LLMS as ZOO

    return ZOO.aliases()


#: canonical encoder -> every alias (the zoo's built-ins + paper spellings + paper-only encoders)
ENCODERS: dict[str, tuple[str, ...]] = _with_zoo(_zoo_encoders(), _PAPER_ENCODER_SPELLINGS)
#: canonical LLM -> every alias (the zoo's LLMs + paper spellings + paper-only decoders)
LLMS: dict[str, tuple[str, ...]] = _with_zoo(_zoo_llms(), _PAPER_LLM_SPELLINGS)

#: Benchmark aliases by column name (the columns themselves, and Avg-5's five, are declared
#: in harness/schema.py; a test keeps the two in step).
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "gqa": ("GQA",),
    "textvqa": ("TextVQA", "textvqa_val", "Text VQA"),
    "pope": ("POPE",),
    "docvqa": ("DocVQA", "docvqa_val", "Doc VQA"),
    "seedbench": (
        "SeedBench",
        "SeedBench-I",
        "SeedBenchI",
        "seed_image",
        "seedbench_image",
        "SEED-Bench-IMG",
    ),
    "sqa": ("ScienceQA", "SQA", "scienceqa_img", "scienceqa", "SQA-IMG"),
    "vqav2": ("VQAv2", "VQA v2", "vqav2_val"),
    "mmvet": ("MMVet", "MM-Vet", "mm-vet"),
    "mmmu": ("MMMU", "mmmu_val"),
    "llava_bench": (
        "LLaVA-Bench",
        "LLaVA BenchW",
        "llava_in_the_wild",
        "llava-bench",
        "LLaVA-W",
        "llava_wild",
    ),
    # Table 5's 'SeedBench' column is not SeedBench-image: the same FastViTHD models score
    # 58.8/61.8/62.5 there but 63.7/67.1/68.2 in Tables 4 and 6. Kept apart, never in Avg-5.
    "seedbench_all": ("seed_all", "SEED-Bench-all"),
}

_SLUG = re.compile(r"[^a-z0-9.+_-]+")
_TILING = re.compile(r"^(\d+)x(\d+)(\+overview)?$")
_RECIPE = re.compile(r"^pt(\d+(?:\.\d+)?)\+it(\d+(?:\.\d+)?)$")
_DATA = re.compile(r"^(\d+(?:\.\d+)?)\+(\d+(?:\.\d+)?)$")

#: The LLaVA-1.5 two-stage recipe: 0.5M alignment (558K) + 0.6M instruction tuning (665K).
LLAVA15 = "llava-1.5"
LLAVA15_DATA = ("0.5", "0.6")


@dataclass(frozen=True, order=True)
class Key:
    """The join key shared by latency and accuracy rows."""

    encoder: str
    resolution: int
    llm: str
    tiling: str = "none"
    recipe: str = LLAVA15

    def as_dict(self) -> dict[str, object]:
        return {
            "encoder": self.encoder,
            "resolution": self.resolution,
            "llm": self.llm,
            "tiling": self.tiling,
            "recipe": self.recipe,
        }


def _lookup(table: dict[str, tuple[str, ...]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for canonical, aliases in table.items():
        out[canonical.lower()] = canonical
        for alias in aliases:
            out[alias.strip().lower()] = canonical
    return out


_ENCODER_LOOKUP = _lookup(ENCODERS)
_LLM_LOOKUP = _lookup(LLMS)
_BENCH_LOOKUP = _lookup(BENCHMARKS)

#: Names beyond the table that a caller vouches for (``vlm-pareto ingest`` adds what the
#: sweeps know: zoo aliases, sweeps/llm/*.yaml, custom encoders; see harness/accuracy/known.py).
_EXTRA: dict[str, dict[str, str]] = {"encoder": {}, "llm": {}}


class UnknownName(UserError):
    """A name in neither the alias table nor the names added with :func:`add_known_names`."""


def add_known_names(what: str, names: dict[str, str]) -> None:
    """Accept ``names`` (lower-case alias -> canonical) as ``what`` ('encoder' or 'llm') names."""
    for alias, canonical in names.items():
        if alias not in (_ENCODER_LOOKUP if what == "encoder" else _LLM_LOOKUP):
            _EXTRA[what][alias.strip().lower()] = canonical


def slug(name: str) -> str:
    """Lower-case, '/' and spaces to '-', drop anything else odd: a safe custom name."""
    s = str(name).strip().lower().replace("/", "-").replace(" ", "-")
    return _SLUG.sub("", s).strip("-")


def _canonical(
    name: object,
    lookup: dict[str, str],
    what: str,
    strict: bool,
    case_sensitive: dict[str, str] | None = None,
) -> str:
    if name is None or (isinstance(name, float) and math.isnan(name)) or str(name).strip() == "":
        raise UserError(f"missing {what} name")
    text = str(name).strip()
    if case_sensitive and text in case_sensitive:
        return case_sensitive[text]
    extra = _EXTRA.get(what, {})
    hit = lookup.get(text.lower()) or extra.get(text.lower())
    if hit is not None:
        return hit
    if not strict:
        s = slug(text)
        if s:
            return s
    raise UnknownName(suggest(text, sorted({*lookup.values(), *extra.values()}), what))


def normalize_encoder(name: object, *, strict: bool = True) -> str:
    """Canonical encoder name (``'FastViTHD'`` -> ``'fastvithd'``).

    Several encoders feeding one VLM (Table 6, R43/R44) are written joined by ``'+'``:
    ``'ConvNeXT-L + ViT-L/14'`` -> ``'convnext-l+vit-l-14'``.
    """
    text = str(name).strip() if name is not None else ""
    if "+" in text and text.lower() not in _ENCODER_LOOKUP:
        return "+".join(normalize_encoder(part, strict=strict) for part in text.split("+"))
    return _canonical(name, _ENCODER_LOOKUP, "encoder", strict, _CASE_SENSITIVE)


def normalize_llm(name: object, *, strict: bool = True) -> str:
    """Canonical LLM name (``'Qwen2-1.5B'`` -> ``'qwen2-1.5b'``)."""
    return _canonical(name, _LLM_LOOKUP, "llm", strict)


def normalize_benchmark(name: object) -> str:
    """Canonical benchmark column (``'TextVQA'`` -> ``'textvqa'``); unknown names are errors."""
    return _canonical(name, _BENCH_LOOKUP, "benchmark", True)


def is_benchmark(name: object) -> bool:
    return str(name).strip().lower() in _BENCH_LOOKUP


def normalize_resolution(value: object) -> int:
    """A positive integer side in pixels; ``'1024'``, ``1024.0`` and ``'1024x1024'`` are accepted."""
    text = str(value).strip().lower()
    if "x" in text:
        a, _, b = text.partition("x")
        if a != b:
            raise UserError(
                f"resolution {value!r} is not square; give the total input side, e.g. 1024"
            )
        text = a
    try:
        f = float(text)
    except ValueError as e:
        raise UserError(f"resolution {value!r} is not a number of pixels") from e
    if not math.isfinite(f) or f <= 0 or f != int(f):
        raise UserError(f"resolution {value!r} must be a positive whole number of pixels")
    return int(f)


def normalize_tiling(value: object) -> str:
    """``'none'`` or ``'RxC'`` with optional ``'+overview'`` (``'2x2 + Overview'`` -> ``'2x2+overview'``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    text = re.sub(r"\s+", "", str(value).lower())
    if text in ("", "none", "no", "1x1", "static", "-"):
        return "none"
    text = text.replace("×", "x")
    m = _TILING.match(text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise UserError(f"tiling {value!r} is not 'none' or 'RxC[+overview]' (e.g. '2x2+overview')")
    return text


def _num(text: str) -> str:
    """Normalise a data-size number: '15.0' -> '15', '1.10' -> '1.1'."""
    f = float(text)
    return str(int(f)) if f == int(f) else repr(f)


def normalize_recipe(value: object) -> str:
    """``'llava-1.5'``, ``'pt<PT>+it<IT>'`` (millions of samples) or ``'unreported'``.

    ``'0.5+0.6'`` and ``'pt0.5+it0.6'`` are LLaVA-1.5 itself; ``'15+1.1'`` -> ``'pt15+it1.1'``.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise UserError("missing recipe; use 'llava-1.5' or 'pt<PT>+it<IT>' (e.g. 'pt15+it1.1')")
    text = re.sub(r"\s+", "", str(value).lower())
    if text in ("llava-1.5", "llava1.5", "llava_1.5", "llava-v1.5"):
        return LLAVA15
    if text in ("unreported", "-", "unknown"):
        return "unreported"
    m = _RECIPE.match(text) or _DATA.match(text)
    if not m:
        raise UserError(f"recipe {value!r} is not 'llava-1.5', 'pt<PT>+it<IT>' or 'unreported'")
    pt, it = _num(m.group(1)), _num(m.group(2))
    if (pt, it) == LLAVA15_DATA:
        return LLAVA15
    return f"pt{pt}+it{it}"


def normalize_key(
    encoder: object,
    resolution: object,
    llm: object,
    tiling: object = "none",
    recipe: object = LLAVA15,
    *,
    strict: bool = True,
) -> Key:
    """Normalise all five key fields through the alias tables."""
    return Key(
        encoder=normalize_encoder(encoder, strict=strict),
        resolution=normalize_resolution(resolution),
        llm=normalize_llm(llm, strict=strict),
        tiling=normalize_tiling(tiling),
        recipe=normalize_recipe(recipe),
    )
