"""FastViT (MobileCLIP MCi2) and FastViTHD (FastVLM's encoder), built from their architecture.

One readable module, top to bottom: the reparameterizable building blocks, the two block
types (RepMixer and attention), the stage/model assembly, the variant configs as data, and
the public factories. Every block is built in its *train-time* form (multi-branch conv+BN,
skip connections, layer scales), whose ``state_dict`` keys follow timm's ``fastvit`` layout,
so checkpoints in that layout load directly. ``reparameterize()`` then rewrites the model in
place into its *inference* form, which is what latency is measured on:

- MobileOne block: kxk conv+BN branches, 1x1 scale conv+BN and skip BN -> one kxk conv.
- Large-kernel conv (patch embedding): 7x7 conv+BN plus 3x3 conv+BN -> one 7x7 conv.
- RepMixer ``x + g * (mixer(x) - norm(x))`` -> one depthwise 3x3 conv.
- RepCPE ``x + dwconv(x)`` -> one depthwise 7x7 conv.
- Conv-FFN depthwise 7x7 conv+BN -> one conv.
- Beyond the published recipe (all exact up to rounding): layer scales are folded into the
  convolution/linear that feeds them, and the attention pre-norm's affine part (all of it for
  BatchNorm) is folded into the qkv projection, so no per-channel multiply is left.

Shapes: ``forward(images[B,3,H,W]) -> [B, out_dim, H/stride, W/stride]`` (ceil for sizes that
are not multiples of the stride); ``images_to_tokens`` turns that into ``[B, HW, out_dim]``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import UserError

__all__ = [
    "FASTVITHD",
    "FASTVIT_MCI2",
    "FastViT",
    "FastViTConfig",
    "ParamCounts",
    "build_fastvit",
    "build_fastvit_mci2",
    "build_fastvithd",
    "count_params",
    "fuse_conv_bn",
    "images_to_tokens",
    "load_weights",
    "param_counts",
    "reparameterize",
]


# --------------------------------------------------------------------------------------------
# Fusion helpers
# --------------------------------------------------------------------------------------------


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Per-channel ``(scale, shift)`` with ``bn(x) == x * scale + shift`` in eval mode."""
    assert bn.running_var is not None and bn.running_mean is not None
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _fused_kernel_bias(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    scale, shift = _bn_scale_shift(bn)
    kernel = conv.weight * scale.reshape(-1, 1, 1, 1)
    bias = shift if conv.bias is None else shift + conv.bias * scale
    return kernel, bias


def _new_conv(like: nn.Conv2d | dict[str, Any], weight: Tensor, bias: Tensor) -> nn.Conv2d:
    """A biased Conv2d with ``like``'s geometry holding ``weight``/``bias`` (same device)."""
    g = (
        like
        if isinstance(like, dict)
        else {
            "in_channels": like.in_channels,
            "out_channels": like.out_channels,
            "kernel_size": like.kernel_size,
            "stride": like.stride,
            "padding": like.padding,
            "dilation": like.dilation,
            "groups": like.groups,
        }
    )
    with torch.device("meta"):  # no allocation or default init: the tensors are given
        conv = nn.Conv2d(**g, bias=True)
    conv.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return conv


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return one conv equal to ``bn(conv(x))`` in eval mode (a new module; inputs untouched)."""
    kernel, bias = _fused_kernel_bias(conv, bn)
    return _new_conv(conv, kernel, bias)


def _identity_kernel(channels: int, groups: int, k: int, like: Tensor) -> Tensor:
    """The kxk (grouped) conv kernel that maps x to itself."""
    kernel = torch.zeros(channels, channels // groups, k, k, dtype=like.dtype, device=like.device)
    idx = torch.arange(channels, device=like.device)
    kernel[idx, idx % (channels // groups), k // 2, k // 2] = 1.0
    return kernel


def _pad_to(kernel: Tensor, k: int) -> Tensor:
    p = (k - kernel.shape[-1]) // 2
    return F.pad(kernel, [p, p, p, p]) if p else kernel


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class ConvBN(nn.Sequential):
    """Bias-free conv followed by BatchNorm (a train-time branch)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)


class LayerScale2d(nn.Module):
    """Per-channel learnable scale ``x * gamma`` (gamma shaped [C,1,1] as in the checkpoints)."""

    def __init__(self, dim: int, init: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dim of an NCHW map (free of copies when channels-last)."""

    def __init__(self, dim: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (self.dim,), self.weight, self.bias, self.eps)
        y = y.permute(0, 3, 1, 2)
        # Keep the caller's memory format (mixing formats makes later ops pick slow paths).
        return y if x.is_contiguous(memory_format=torch.channels_last) else y.contiguous()


class SqueezeExcite(nn.Module):
    """Channel gating: global mean -> 1x1 reduce -> ReLU -> 1x1 expand -> sigmoid."""

    def __init__(self, dim: int, reduced: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        # A true global mean (the original's fixed 16x16 pool only equals it at one resolution).
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * s


class MobileOneBlock(nn.Module):
    """MobileOne block: sum of kxk conv+BN branches, a 1x1 conv+BN scale branch and a BN skip
    (when shapes allow), then optional squeeze-excite and GELU. Fuses into one kxk conv."""

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        groups: int = 1,
        *,
        act: bool = True,
        se: bool = False,
        scale_branch: bool = True,
        conv_branches: int = 1,
    ):
        super().__init__()
        self.cin, self.cout, self.k, self.stride, self.groups = cin, cout, k, stride, groups
        self.identity = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None
        self.conv_kxk: nn.ModuleList | None = nn.ModuleList(
            ConvBN(cin, cout, k, stride, groups) for _ in range(conv_branches)
        )
        self.conv_scale = ConvBN(cin, cout, 1, stride, groups) if k > 1 and scale_branch else None
        self.reparam_conv: nn.Conv2d | None = None
        self.se = SqueezeExcite(cout, max(1, cout // 16)) if se else nn.Identity()
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.reparam_conv is not None:
            out = self.reparam_conv(x)
        else:
            assert self.conv_kxk is not None
            out = self.identity(x) if self.identity is not None else 0
            if self.conv_scale is not None:
                out = out + self.conv_scale(x)
            for branch in self.conv_kxk:
                out = out + branch(x)
        return self.act(self.se(out))

    @torch.no_grad()
    def kernel_bias(self) -> tuple[Tensor, Tensor]:
        """The single kxk kernel and bias equal to the sum of the train-time branches."""
        if self.reparam_conv is not None:
            assert self.reparam_conv.bias is not None  # _new_conv always gives a bias
            return self.reparam_conv.weight, self.reparam_conv.bias
        assert self.conv_kxk is not None
        ref = next(self.parameters())
        kernel = ref.new_zeros(self.cout, self.cin // self.groups, self.k, self.k)
        bias = ref.new_zeros(self.cout)
        for branch in self.conv_kxk:
            assert isinstance(branch, ConvBN)
            kb, bb = _fused_kernel_bias(branch.conv, branch.bn)
            kernel, bias = kernel + kb, bias + bb
        if self.conv_scale is not None:
            kb, bb = _fused_kernel_bias(self.conv_scale.conv, self.conv_scale.bn)
            kernel, bias = kernel + _pad_to(kb, self.k), bias + bb
        if self.identity is not None:
            scale, shift = _bn_scale_shift(self.identity)
            ident = _identity_kernel(self.cin, self.groups, self.k, ref)
            kernel, bias = kernel + ident * scale.reshape(-1, 1, 1, 1), bias + shift
        return kernel, bias

    def geometry(self) -> dict[str, Any]:
        return {
            "in_channels": self.cin,
            "out_channels": self.cout,
            "kernel_size": self.k,
            "stride": self.stride,
            "padding": self.k // 2,
            "groups": self.groups,
        }

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        self.reparam_conv = _new_conv(self.geometry(), *self.kernel_bias())
        self.identity = self.conv_kxk = self.conv_scale = None


class ReparamLargeKernelConv(nn.Module):
    """Large-kernel (7x7) conv+BN with a parallel small-kernel (3x3) conv+BN, then optional
    squeeze-excite and GELU. Fuses into one large-kernel conv."""

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        stride: int,
        groups: int,
        small_k: int = 3,
        *,
        se: bool = False,
        act: bool = True,
    ):
        super().__init__()
        self.k = k
        self.large_conv: ConvBN | None = ConvBN(cin, cout, k, stride, groups)
        self.small_conv: ConvBN | None = ConvBN(cin, cout, small_k, stride, groups)
        self.reparam_conv: nn.Conv2d | None = None
        self.se = SqueezeExcite(cout, _divisible(cout * 0.25, 8)) if se else nn.Identity()
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.reparam_conv is not None:
            out = self.reparam_conv(x)
        else:
            assert self.large_conv is not None and self.small_conv is not None
            out = self.large_conv(x) + self.small_conv(x)
        return self.act(self.se(out))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        assert self.large_conv is not None and self.small_conv is not None
        kl, bl = _fused_kernel_bias(self.large_conv.conv, self.large_conv.bn)
        ks, bs = _fused_kernel_bias(self.small_conv.conv, self.small_conv.bn)
        self.reparam_conv = _new_conv(self.large_conv.conv, kl + _pad_to(ks, self.k), bl + bs)
        self.large_conv = self.small_conv = None


def _divisible(v: float, divisor: int) -> int:
    """Round ``v`` to a multiple of ``divisor``, never below 90% of it (timm's make_divisible)."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


class PatchEmbed(nn.Module):
    """Stride-2 downsampling between stages: grouped 7x7 large-kernel conv + 1x1 MobileOne."""

    def __init__(self, cin: int, cout: int, k: int = 7, se: bool = False):
        super().__init__()
        self.proj = nn.Sequential(
            ReparamLargeKernelConv(cin, cout, k, 2, groups=cin, se=se, act=True),
            MobileOneBlock(cout, cout, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class RepCPE(nn.Module):
    """Conditional positional encoding ``x + dwconv7x7(x)``; fuses into one depthwise conv."""

    def __init__(self, dim: int, k: int = 7):
        super().__init__()
        self.dim, self.k = dim, k
        self.pos_enc: nn.Conv2d | None = nn.Conv2d(dim, dim, k, 1, k // 2, groups=dim)
        self.reparam_conv: nn.Conv2d | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        assert self.pos_enc is not None
        return x + self.pos_enc(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None or self.pos_enc is None:
            return
        assert self.pos_enc.bias is not None
        w = self.pos_enc.weight + _identity_kernel(self.dim, self.dim, self.k, self.pos_enc.weight)
        self.reparam_conv = _new_conv(self.pos_enc, w, self.pos_enc.bias)
        self.pos_enc = None


class RepMixer(nn.Module):
    """Token mixer ``x + gamma * (mixer(x) - norm(x))`` with depthwise MobileOne blocks;
    fuses into a single depthwise kxk conv (the skip connection becomes its centre tap)."""

    def __init__(self, dim: int, k: int = 3, layer_scale_init: float = 1e-5):
        super().__init__()
        self.dim, self.k = dim, k
        self.norm: MobileOneBlock | None = MobileOneBlock(
            dim, dim, k, groups=dim, act=False, scale_branch=False, conv_branches=0
        )
        self.mixer: MobileOneBlock | None = MobileOneBlock(dim, dim, k, groups=dim, act=False)
        self.layer_scale: LayerScale2d | None = LayerScale2d(dim, layer_scale_init)
        self.reparam_conv: nn.Conv2d | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        assert self.norm is not None and self.mixer is not None and self.layer_scale is not None
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        assert self.norm is not None and self.mixer is not None and self.layer_scale is not None
        km, bm = self.mixer.kernel_bias()
        kn, bn = self.norm.kernel_bias()
        g = self.layer_scale.gamma.reshape(-1)
        w = _identity_kernel(self.dim, self.dim, self.k, km) + g.reshape(-1, 1, 1, 1) * (km - kn)
        self.reparam_conv = _new_conv(self.mixer.geometry(), w, g * (bm - bn))
        self.norm = self.mixer = self.layer_scale = None


class ConvFFN(nn.Module):
    """Conv-FFN: depthwise 7x7 conv+BN, 1x1 expand, GELU, 1x1 project."""

    def __init__(self, dim: int, hidden: int, k: int = 7):
        super().__init__()
        self.conv: nn.Module = ConvBN(dim, dim, k, groups=dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if isinstance(self.conv, ConvBN):
            self.conv = fuse_conv_bn(self.conv.conv, self.conv.bn)


@torch.no_grad()
def _fold_scale(layer: nn.Conv2d | nn.Linear, scale: LayerScale2d) -> None:
    """Make ``layer`` output ``scale(layer(x))`` by scaling its output rows (and bias)."""
    g = scale.gamma.reshape(-1)
    layer.weight.mul_(g.reshape(-1, *([1] * (layer.weight.dim() - 1))))
    if layer.bias is not None:
        layer.bias.mul_(g)


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of an NCHW map (head dim 32), via SDPA."""

    def __init__(self, dim: int, head_dim: int = 32):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"attention dim {dim} is not a multiple of head dim {head_dim}")
        self.heads, self.head_dim = dim // head_dim, head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        n = h * w
        # (B,C,H,W) -> (B,N,C): a free view when x is channels-last.
        tokens = x.permute(0, 2, 3, 1).reshape(b, n, c)
        q, k, v = self.qkv(tokens).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(b, n, c))
        out = out.view(b, h, w, c).permute(0, 3, 1, 2)  # channels-last strided NCHW view
        return out if x.is_contiguous(memory_format=torch.channels_last) else out.contiguous()


class RepMixerBlock(nn.Module):
    """MetaFormer block with RepMixer token mixing and a conv-FFN."""

    def __init__(
        self, dim: int, mlp_ratio: float, k: int = 3, ffn_k: int = 7, layer_scale_init: float = 1e-5
    ):
        super().__init__()
        self.token_mixer = RepMixer(dim, k, layer_scale_init)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), ffn_k)
        self.layer_scale: nn.Module = LayerScale2d(dim, layer_scale_init)

    def forward(self, x: Tensor) -> Tensor:
        x = self.token_mixer(x)
        return x + self.layer_scale(self.mlp(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        self.token_mixer.reparameterize()
        self.mlp.reparameterize()
        if isinstance(self.layer_scale, LayerScale2d):
            _fold_scale(self.mlp.fc2, self.layer_scale)
            self.layer_scale = nn.Identity()


class AttentionBlock(nn.Module):
    """MetaFormer block: pre-norm multi-head self-attention and a conv-FFN, both residual."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float,
        norm: str = "batchnorm",
        head_dim: int = 32,
        ffn_k: int = 7,
        layer_scale_init: float = 1e-5,
    ):
        super().__init__()
        self.norm: nn.Module = nn.BatchNorm2d(dim) if norm == "batchnorm" else LayerNorm2d(dim)
        self.token_mixer = Attention(dim, head_dim)
        self.layer_scale_1: nn.Module = LayerScale2d(dim, layer_scale_init)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), ffn_k)
        self.layer_scale_2: nn.Module = LayerScale2d(dim, layer_scale_init)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.layer_scale_1(self.token_mixer(self.norm(x)))
        return x + self.layer_scale_2(self.mlp(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        self.mlp.reparameterize()
        if isinstance(self.layer_scale_1, LayerScale2d) and isinstance(
            self.layer_scale_2, LayerScale2d
        ):
            _fold_scale(self.token_mixer.proj, self.layer_scale_1)
            _fold_scale(self.mlp.fc2, self.layer_scale_2)
            self.layer_scale_1 = self.layer_scale_2 = nn.Identity()
        self._fold_norm_into_qkv()

    def _fold_norm_into_qkv(self) -> None:
        # qkv(x * s + t) = (W * s) x + W t: BatchNorm disappears entirely; LayerNorm keeps
        # only its normalisation, its affine part moves into qkv.
        if isinstance(self.norm, nn.BatchNorm2d):
            s, t = _bn_scale_shift(self.norm)
            self.norm = nn.Identity()
        elif (
            isinstance(self.norm, LayerNorm2d)
            and self.norm.weight is not None
            and self.norm.bias is not None
        ):
            s, t = self.norm.weight, self.norm.bias
            self.norm = LayerNorm2d(self.norm.dim, self.norm.eps, affine=False)
        else:
            return
        old = self.token_mixer.qkv
        bias = old.weight @ t + (old.bias if old.bias is not None else 0)
        with torch.device("meta"):
            new = nn.Linear(old.in_features, old.out_features, bias=True)
        new.weight = nn.Parameter(old.weight * s, requires_grad=False)
        new.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.token_mixer.qkv = new


class Stage(nn.Module):
    """One stage: optional downsampling patch embedding, optional RepCPE, then blocks."""

    def __init__(self, cin: int, dim: int, depth: int, mixer: str, cfg: FastViTConfig, index: int):
        super().__init__()
        self.downsample: nn.Module = (
            PatchEmbed(cin, dim, cfg.down_kernel, cfg.se_downsample[index])
            if index > 0
            else nn.Identity()
        )
        self.pos_emb: nn.Module = (
            RepCPE(dim, cfg.cpe_kernel) if cfg.pos_emb[index] else nn.Identity()
        )
        blocks: list[nn.Module]
        if mixer == "repmixer":
            blocks = [
                RepMixerBlock(
                    dim, cfg.mlp_ratio, cfg.repmixer_kernel, cfg.ffn_kernel, cfg.layer_scale_init
                )
                for _ in range(depth)
            ]
        else:
            blocks = [
                AttentionBlock(
                    dim,
                    cfg.mlp_ratio,
                    cfg.attn_norm,
                    cfg.head_dim,
                    cfg.ffn_kernel,
                    cfg.layer_scale_init,
                )
                for _ in range(depth)
            ]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.pos_emb(self.downsample(x)))


class ClipHead(nn.Module):
    """CLIP projection head: global average pool, then a bias-free linear projection."""

    def __init__(self, dim: int, embed_dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, embed_dim, bias=False)

    def forward(self, feature_map: Tensor) -> Tensor:
        return self.fc(feature_map.mean((2, 3)))


# --------------------------------------------------------------------------------------------
# Variants as data, and the model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FastViTConfig:
    """A FastViT variant. Stage i>0 starts with a stride-2 patch embedding, so the output
    stride is ``4 * 2**(stages-1)``; the final conv expands to ``dims[-1] * final_expansion``."""

    name: str
    depths: tuple[int, ...]
    dims: tuple[int, ...]
    mlp_ratio: float
    token_mixers: tuple[str, ...]  # "repmixer" | "attention", per stage
    pos_emb: tuple[bool, ...]  # RepCPE at the start of stage i
    se_downsample: tuple[bool, ...]  # squeeze-excite in the patch embedding into stage i
    attn_norm: str = "batchnorm"  # pre-attention norm: "batchnorm" | "layernorm"
    stem_scale_branch: bool = True
    head_dim: int = 32
    repmixer_kernel: int = 3
    down_kernel: int = 7
    cpe_kernel: int = 7
    ffn_kernel: int = 7
    final_expansion: float = 2.0
    clip_dim: int = 512  # CLIP embedding size of the optional head
    layer_scale_init: float = 1e-5
    in_chans: int = 3
    paper_params_m: dict[str, float] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        n = len(self.depths)
        for name in ("dims", "token_mixers", "pos_emb", "se_downsample"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{self.name}: {name} needs {n} entries, one per stage")
        bad = set(self.token_mixers) - {"repmixer", "attention"}
        if bad:
            raise ValueError(f"{self.name}: unknown token mixer(s) {sorted(bad)}")
        if self.attn_norm not in ("batchnorm", "layernorm"):
            raise ValueError(f"{self.name}: attn_norm must be 'batchnorm' or 'layernorm'")

    @property
    def stride(self) -> int:
        return 4 * 2 ** (len(self.depths) - 1)

    @property
    def out_dim(self) -> int:
        return int(self.dims[-1] * self.final_expansion)


FASTVITHD = FastViTConfig(
    name="fastvithd",
    depths=(2, 12, 24, 4, 2),
    dims=(96, 192, 384, 768, 1536),
    mlp_ratio=4.0,
    token_mixers=("repmixer",) * 3 + ("attention",) * 2,
    pos_emb=(False, False, False, True, True),
    se_downsample=(False,) * 5,
    attn_norm="layernorm",
    stem_scale_branch=False,
    clip_dim=768,
    paper_params_m={"with_head": 125.1, "without_head": 122.7},
)

FASTVIT_MCI2 = FastViTConfig(
    name="fastvit",
    depths=(4, 12, 24, 4),
    dims=(80, 160, 320, 640),
    mlp_ratio=3.0,
    token_mixers=("repmixer",) * 3 + ("attention",),
    pos_emb=(False, False, False, True),
    se_downsample=(False, False, True, True),
    attn_norm="batchnorm",
    stem_scale_branch=True,
    clip_dim=512,
    paper_params_m={"with_head": 35.7},
)


class FastViT(nn.Module):
    """FastViT / FastViTHD image encoder.

    ``forward`` returns the final feature map ``[B, out_dim, H/stride, W/stride]`` (the VLM's
    visual tokens); ``embed`` applies the optional CLIP head. ``reparameterize()`` switches to
    the fused inference form in place (idempotent).
    """

    # Measured on a 2-core AVX-512 CPU (docs/encoders-fastvit.md): channels-last is faster for
    # the reparameterized model; runners should convert model and input to it on CPU.
    preferred_memory_format = torch.channels_last

    def __init__(self, cfg: FastViTConfig, with_head: bool = False):
        super().__init__()
        self.cfg = cfg
        self.stride, self.out_dim = cfg.stride, cfg.out_dim
        d0 = cfg.dims[0]
        sb = cfg.stem_scale_branch
        self.stem = nn.Sequential(
            MobileOneBlock(cfg.in_chans, d0, 3, 2, scale_branch=sb),
            MobileOneBlock(d0, d0, 3, 2, groups=d0, scale_branch=sb),
            MobileOneBlock(d0, d0, 1, scale_branch=sb),
        )
        stages, cin = [], d0
        for i, (depth, dim, mixer) in enumerate(
            zip(cfg.depths, cfg.dims, cfg.token_mixers, strict=True)
        ):
            stages.append(Stage(cin, dim, depth, mixer, cfg, i))
            cin = dim
        self.stages = nn.Sequential(*stages)
        self.final_conv = MobileOneBlock(cin, cfg.out_dim, 3, groups=cin, se=True)
        self.head = ClipHead(cfg.out_dim, cfg.clip_dim) if with_head else None
        self.reparameterized = False

    def forward(self, images: Tensor) -> Tensor:
        return self.final_conv(self.stages(self.stem(images)))

    def embed(self, images: Tensor) -> Tensor:
        """CLIP image embedding ``[B, clip_dim]`` (needs ``with_head=True``)."""
        if self.head is None:
            raise UserError(
                f"{self.cfg.name} was built without its CLIP head; build it with with_head=True"
            )
        return self.head(self(images))

    def output_size(self, height: int, width: int | None = None) -> tuple[int, int]:
        """Spatial size of ``forward``'s output (each stride-2 layer halves, rounding up)."""
        sizes = []
        for s in (height, height if width is None else width):
            for _ in range(int(math.log2(self.stride))):
                s = (s + 1) // 2
            sizes.append(s)
        return sizes[0], sizes[1]

    def num_tokens(self, resolution: int) -> int:
        """Visual tokens at a square ``resolution``: ``(ceil(R / stride))**2``."""
        h, w = self.output_size(resolution)
        return h * w

    @torch.no_grad()
    def reparameterize(self) -> FastViT:
        """Fuse every train-time branch into single convs, in place; returns ``self``."""
        _reparameterize_children(self)
        self.reparameterized = True
        return self.eval()


def _reparameterize_children(module: nn.Module) -> None:
    # A module with its own ``reparameterize`` handles its whole subtree; others are walked.
    for child in list(module.children()):
        fn = getattr(child, "reparameterize", None)
        if callable(fn):
            fn()
        else:
            _reparameterize_children(child)


def reparameterize(model: nn.Module) -> nn.Module:
    """Switch ``model`` (a FastViT or any module containing FastViT blocks) to inference form."""
    fn = getattr(model, "reparameterize", None)
    if callable(fn):
        fn()
    else:
        _reparameterize_children(model)
    return model.eval()


def images_to_tokens(feature_map: Tensor) -> Tensor:
    """``[B, C, H, W] -> [B, H*W, C]`` in row-major pixel order (what the projector consumes)."""
    b, c, h, w = feature_map.shape
    return feature_map.permute(0, 2, 3, 1).reshape(b, h * w, c)


# --------------------------------------------------------------------------------------------
# Parameter counts
# --------------------------------------------------------------------------------------------


def count_params(model: nn.Module) -> int:
    """Number of parameters (distinct tensors counted once; buffers such as BN stats excluded)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a FastViT: ``encoder`` excludes the CLIP head, ``with_head`` adds it."""

    encoder: int
    head: int
    reparameterized: bool

    @property
    def with_head(self) -> int:
        return self.encoder + self.head

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder,
            "head": self.head,
            "with_head": self.with_head,
            "reparameterized": self.reparameterized,
        }


def param_counts(model: FastViT) -> ParamCounts:
    """Counts for ``model``; the head count is computed from the config if it was not built."""
    head = (
        count_params(model.head) if model.head is not None else model.out_dim * model.cfg.clip_dim
    )
    encoder = count_params(model) - (count_params(model.head) if model.head is not None else 0)
    return ParamCounts(encoder=encoder, head=head, reparameterized=model.reparameterized)


# --------------------------------------------------------------------------------------------
# Factories and weights
# --------------------------------------------------------------------------------------------


def build_fastvit(
    cfg: FastViTConfig,
    with_head: bool = False,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    seed: int = 0,
    reparameterized: bool = False,
) -> FastViT:
    """Build ``cfg`` on the meta device and fill it with well-conditioned values (eval mode).

    ``device="meta"`` returns the unfilled skeleton (for counting, or for a caller that
    materializes it itself); ``reparameterized=True`` fuses it (this works on meta too).
    """
    from harness.init import materialize

    if torch.device(device).type == "meta":
        with torch.device("meta"):
            model = FastViT(cfg, with_head).eval()
        model = model.to(dtype=dtype) if dtype is not None else model
    else:
        model = materialize(lambda: FastViT(cfg, with_head), device=device, dtype=dtype, seed=seed)
    return model.reparameterize() if reparameterized else model


def build_fastvithd(with_head: bool = False, **kwargs: Any) -> FastViT:
    """FastViTHD (FastVLM): stride 64, 3072-channel output. Train-time form unless
    ``reparameterized=True``; call ``reparameterize()`` before timing."""
    return build_fastvit(FASTVITHD, with_head, **kwargs)


def build_fastvit_mci2(with_head: bool = False, **kwargs: Any) -> FastViT:
    """FastViT MobileCLIP MCi2: stride 32, 1280-channel output (see ``build_fastvithd``)."""
    return build_fastvit(FASTVIT_MCI2, with_head, **kwargs)


def _read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise UserError(f"weights file not found: {p}")
    try:
        if p.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd: Any = load_file(p, device="cpu")
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as e:  # unreadable, or refused by the safe unpickler
        raise UserError(f"cannot read weights from {p}: {type(e).__name__}: {e}") from e
    # Common wrappers: {"state_dict": ...} / {"model": ...}.
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise UserError(f"{p} does not hold a state dict of tensors")
    return sd


def _key_list(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > n else ''})"


@torch.no_grad()
def load_weights(model: FastViT, path: str | os.PathLike[str]) -> FastViT:
    """Load a local safetensors / PyTorch state dict (safe loading only) into ``model``.

    Keys follow this module's names, which are timm's ``fastvit`` train-time names (so timm's
    ``fastvit_mci2`` / ``fastvit_mci3`` checkpoints load; an all-zero ``head.fc.bias`` from
    timm is dropped). A file saved from a model reparameterized here is loaded after
    reparameterizing ``model``. Keys under ``head.`` are ignored when the model was built
    without a head. Any other mismatch raises ``UserError`` naming the keys.
    """
    sd = _read_state_dict(path)
    if any(".reparam_conv." in k for k in sd) and not model.reparameterized:
        model.reparameterize()
    if model.head is None:
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    elif "head.fc.bias" in sd and not sd["head.fc.bias"].any():
        # timm stores the (bias-free) CLIP projection as a Linear with a zero bias.
        sd = {k: v for k, v in sd.items() if k != "head.fc.bias"}
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys: {_key_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_key_list(unexpected)}")
        if wrong:
            parts.append(f"shape mismatches: {_key_list(wrong, 3)}")
        raise UserError(
            f"weights in {os.fspath(path)} do not fit {model.cfg.name}: " + "; ".join(parts)
        )
    model.load_state_dict(sd, strict=True)
    return model
