"""FastViT / FastViTHD: architecture facts, token counts, reparameterization, weights."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch
from torch import nn

from harness.encoders import fastvit as fv
from harness.errors import UserError


def _tiny(cfg: fv.FastViTConfig) -> fv.FastViTConfig:
    """The same variant shrunk to one block per stage and narrow channels (milliseconds)."""
    n = len(cfg.depths)
    dims = (16, 32, 32, 64, 64)[:n]
    return dataclasses.replace(cfg, name=f"tiny-{cfg.name}", depths=(1,) * n, dims=dims, clip_dim=8)


class _Payload:
    """An arbitrary Python object: a safe (weights_only) load must refuse it."""


TINY_HD = _tiny(fv.FASTVITHD)
TINY_MCI2 = _tiny(fv.FASTVIT_MCI2)


@torch.no_grad()
def _perturb(model: nn.Module, seed: int = 0) -> None:
    """Make BN statistics, norms and layer scales non-trivial so fusions are really tested."""
    g = torch.Generator().manual_seed(seed)

    def u(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            u(m.running_mean, -0.5, 0.5)
            u(m.running_var, 0.5, 2.0)
            u(m.weight, 0.5, 1.5)
            u(m.bias, -0.3, 0.3)
        elif isinstance(m, fv.LayerNorm2d) and m.weight is not None:
            u(m.weight, 0.5, 1.5)
            u(m.bias, -0.3, 0.3)
        elif isinstance(m, fv.LayerScale2d):
            u(m.gamma, 0.2, 1.0)
        elif isinstance(m, nn.Conv2d) and m.bias is not None:
            u(m.bias, -0.1, 0.1)


@dataclasses.dataclass
class _Built:
    model: fv.FastViT  # reparameterized
    build_s: float  # time to build the train-time model
    x: torch.Tensor
    before: torch.Tensor  # train-time output on x (perturbed statistics)
    leftovers: list[str]  # train-time parts found before reparameterizing


@pytest.fixture(scope="module")
def hd_built() -> _Built:
    """One full-size FastViTHD for the whole module (building it is the slow part)."""
    t0 = time.perf_counter()
    model = fv.build_fastvithd(seed=3)
    build_s = time.perf_counter() - t0
    _perturb(model, seed=3)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        before = model(x)
    leftovers = _train_time_leftovers(model)
    model.reparameterize()
    return _Built(model, build_s, x, before, leftovers)


@pytest.fixture(scope="module")
def hd(hd_built: _Built) -> fv.FastViT:
    return hd_built.model


@pytest.fixture(scope="module")
def mci2() -> fv.FastViT:
    return fv.build_fastvit_mci2(reparameterized=True)


# ------------------------------------------------------------------ architecture and counts


def test_configs_are_data() -> None:
    assert fv.FASTVITHD.depths == (2, 12, 24, 4, 2)
    assert fv.FASTVITHD.dims == (96, 192, 384, 768, 1536)
    assert (fv.FASTVITHD.stride, fv.FASTVITHD.out_dim) == (64, 3072)
    assert fv.FASTVIT_MCI2.depths == (4, 12, 24, 4)
    assert (fv.FASTVIT_MCI2.stride, fv.FASTVIT_MCI2.out_dim) == (32, 1280)
    with pytest.raises(ValueError, match="token mixer"):
        dataclasses.replace(fv.FASTVITHD, token_mixers=("repmixer",) * 4 + ("conv",))
    with pytest.raises(ValueError, match="one per stage"):
        dataclasses.replace(fv.FASTVITHD, dims=(96, 192))


def test_structure_matches_reference() -> None:
    with torch.device("meta"):
        m = fv.FastViT(fv.FASTVITHD)
    assert [len(s.blocks) for s in m.stages] == [2, 12, 24, 4, 2]
    kinds = [type(s.blocks[0]).__name__ for s in m.stages]
    assert kinds == ["RepMixerBlock"] * 3 + ["AttentionBlock"] * 2
    assert [isinstance(s.pos_emb, fv.RepCPE) for s in m.stages] == [False] * 3 + [True] * 2
    assert m.stages[3].blocks[0].token_mixer.heads == 768 // 32
    assert m.stages[4].blocks[0].mlp.fc1.out_channels == 4 * 1536
    assert isinstance(m.stages[4].blocks[0].norm, fv.LayerNorm2d)
    # stem: 3x3 s2, 3x3 s2 depthwise, 1x1 (no scale branch in FastViTHD)
    stem = [(b.k, b.stride, b.groups) for b in m.stem]
    assert stem == [(3, 2, 1), (3, 2, 96), (1, 1, 1)]
    assert all(b.conv_scale is None for b in m.stem)
    down = m.stages[1].downsample.proj[0]
    assert down.large_conv.conv.kernel_size == (7, 7) and down.large_conv.conv.stride == (2, 2)
    assert down.large_conv.conv.groups == 96 and down.small_conv.conv.kernel_size == (3, 3)
    fc = m.final_conv
    assert (fc.cin, fc.cout, fc.k, fc.groups) == (1536, 3072, 3, 1536)
    assert isinstance(fc.se, fv.SqueezeExcite)
    with torch.device("meta"):
        mc = fv.FastViT(fv.FASTVIT_MCI2)
    assert isinstance(mc.stages[3].blocks[0].norm, nn.BatchNorm2d)
    assert mc.stages[1].blocks[0].mlp.fc1.out_channels == 3 * 160
    assert [isinstance(s.downsample.proj[0].se, fv.SqueezeExcite) for s in mc.stages[1:]] == [
        False,
        True,
        True,
    ]


def test_param_counts_within_2pct_of_paper(hd: fv.FastViT, mci2: fv.FastViT) -> None:
    # The paper's counts are of the inference (reparameterized) model.
    c = fv.param_counts(hd)
    assert c.reparameterized
    assert c.head == 3072 * 768
    assert c.encoder / 1e6 == pytest.approx(122.7, rel=0.02)
    assert c.with_head / 1e6 == pytest.approx(125.1, rel=0.02)
    m = fv.param_counts(mci2)
    assert m.head == 1280 * 512
    assert m.with_head / 1e6 == pytest.approx(35.7, rel=0.02)
    # The train-time form (extra BN/scale branches) is within 2% too.
    with torch.device("meta"):
        train = fv.FastViT(fv.FASTVITHD, with_head=True)
    assert fv.count_params(train) / 1e6 == pytest.approx(125.1, rel=0.02)


def test_meta_build_counts_without_allocating() -> None:
    t0 = time.perf_counter()
    m = fv.build_fastvithd(device="meta", with_head=True, reparameterized=True)
    assert time.perf_counter() - t0 < 10.0
    assert all(p.is_meta for p in m.parameters())
    assert fv.param_counts(m).with_head / 1e6 == pytest.approx(125.1, rel=0.02)


def test_count_params_with_head_built() -> None:
    with torch.device("meta"):
        with_head = fv.FastViT(TINY_HD, with_head=True)
        without = fv.FastViT(TINY_HD)
    a, b = fv.param_counts(with_head), fv.param_counts(without)
    assert a.encoder == b.encoder == fv.count_params(without)
    assert a.with_head == fv.count_params(with_head) == b.with_head
    assert a.head == TINY_HD.out_dim * TINY_HD.clip_dim


# ------------------------------------------------------------------ tokens from real shapes


@pytest.mark.parametrize("res,tokens", [(256, 16), (512, 64)])
def test_fastvithd_tokens_from_forward(hd: fv.FastViT, res: int, tokens: int) -> None:
    with torch.inference_mode():
        y = hd(torch.rand(1, 3, res, res))
    assert y.shape == (1, 3072, res // 64, res // 64)
    t = fv.images_to_tokens(y)
    assert t.shape == (1, tokens, 3072)
    assert hd.num_tokens(res) == tokens
    # token i is pixel (i // W, i % W)
    assert torch.equal(t[0, 1], y[0, :, 0, 1])


def test_fastvit_mci2_tokens_from_forward(mci2: fv.FastViT) -> None:
    with torch.inference_mode():
        y = mci2(torch.rand(2, 3, 256, 256))
    assert y.shape == (2, 1280, 8, 8)
    assert fv.images_to_tokens(y).shape == (2, 64, 1280)


def test_token_formula_for_large_resolutions(hd: fv.FastViT, mci2: fv.FastViT) -> None:
    assert {r: hd.num_tokens(r) for r in (256, 512, 768, 1024)} == {
        256: 16,
        512: 64,
        768: 144,
        1024: 256,
    }
    assert {r: mci2.num_tokens(r) for r in (256, 768)} == {256: 64, 768: 576}
    assert all(hd.num_tokens(r) == (r // 64) ** 2 for r in (256, 512, 768, 1024, 1536, 2048))


@pytest.mark.parametrize("h,w", [(64, 64), (100, 70), (130, 200)])
def test_output_size_matches_forward(h: int, w: int) -> None:
    m = fv.build_fastvit(TINY_HD, reparameterized=True)
    with torch.inference_mode():
        y = m(torch.rand(1, 3, h, w))
    assert tuple(y.shape[2:]) == m.output_size(h, w)


# ------------------------------------------------------------------ reparameterization


@pytest.mark.parametrize("cfg", [TINY_HD, TINY_MCI2], ids=lambda c: c.name)
def test_reparameterize_preserves_outputs(cfg: fv.FastViTConfig) -> None:
    model = fv.build_fastvit(cfg, with_head=True)
    neutral = fv.build_fastvit(cfg, with_head=True)
    _perturb(model)
    x = torch.rand(2, 3, 96, 128) * 2 - 1
    with torch.no_grad():
        before = model(x)
        assert not torch.allclose(before, neutral(x), atol=1e-2)  # the statistics matter
        emb_before = model.embed(x)
        fv.reparameterize(model)
        after = model(x)
    assert model.reparameterized
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.embed(x), emb_before, rtol=1e-4, atol=1e-4)


def test_reparameterize_preserves_full_fastvithd(hd_built: _Built) -> None:
    with torch.no_grad():
        after = hd_built.model(hd_built.x)
    before = hd_built.before
    assert before.abs().max() > 0.1
    torch.testing.assert_close(after, before, rtol=1e-3, atol=1e-3 * before.abs().max().item())
    assert len(hd_built.leftovers) > 100 and _train_time_leftovers(hd_built.model) == []


def _train_time_leftovers(model: nn.Module) -> list[str]:
    bad = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.BatchNorm2d, fv.ConvBN, fv.LayerScale2d)):
            bad.append(f"{name}:{type(m).__name__}")
        if isinstance(m, fv.LayerNorm2d) and m.weight is not None:
            bad.append(f"{name}:affine LayerNorm")
        if (
            isinstance(m, (fv.MobileOneBlock, fv.ReparamLargeKernelConv, fv.RepMixer, fv.RepCPE))
            and m.reparam_conv is None
        ):
            bad.append(f"{name}:unfused {type(m).__name__}")
    bad += [
        n
        for n, _ in model.named_parameters()
        if any(
            s in n
            for s in (
                "conv_kxk",
                "conv_scale",
                "identity",
                "large_conv",
                "small_conv",
                "pos_enc",
                "gamma",
            )
        )
    ]
    return bad


def test_reparameterize_removes_train_time_branches() -> None:
    model = fv.build_fastvit(TINY_MCI2)
    assert len(_train_time_leftovers(model)) > 10
    n_convs_before = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    model.reparameterize()
    assert _train_time_leftovers(model) == []
    n_convs_after = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert n_convs_after < n_convs_before
    # RepMixer is one depthwise 3x3 conv; RepCPE one depthwise 7x7.
    mixer = model.stages[0].blocks[0].token_mixer.reparam_conv
    assert mixer.groups == mixer.in_channels and mixer.kernel_size == (3, 3)
    assert model.stages[3].pos_emb.reparam_conv.kernel_size == (7, 7)
    assert list(dict(model.stages[3].pos_emb.named_children())) == ["reparam_conv"]


def test_reparameterize_is_idempotent() -> None:
    model = fv.build_fastvit(TINY_HD).reparameterize()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    model.reparameterize()
    assert sd.keys() == model.state_dict().keys()
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())


def test_fuse_conv_bn() -> None:
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=True)
    bn = nn.BatchNorm2d(6)
    _perturb(nn.Sequential(conv, bn))
    bn.eval()
    fused = fv.fuse_conv_bn(conv, bn)
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), bn(conv(x)), rtol=1e-5, atol=1e-5)
    assert fused.groups == 2 and fused.stride == (2, 2)


def test_channels_last_gives_same_output() -> None:
    model = fv.build_fastvit(TINY_MCI2, reparameterized=True)
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last)
        )
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ building and heads


def test_build_is_cheap_and_finite(hd_built: _Built) -> None:
    # about 1 s on an idle 2-core machine; generous for a contended one
    assert hd_built.build_s < 15.0
    model = hd_built.model
    assert not model.training
    for name, p in model.named_parameters():
        assert p.device.type == "cpu", name
        assert torch.isfinite(p).all(), name
    # well-conditioned: no denormal-scale weights anywhere
    tiny = [n for n, p in model.named_parameters() if p.numel() > 1 and 0 < p.abs().max() < 1e-6]
    assert tiny == []


def test_head_embed() -> None:
    with_head = fv.build_fastvit(TINY_HD, with_head=True)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert with_head.embed(x).shape == (2, TINY_HD.clip_dim)
        assert with_head(x).shape == (2, TINY_HD.out_dim, 1, 1)  # forward is the feature map
    with pytest.raises(UserError, match="with_head=True"):
        fv.build_fastvit(TINY_HD).embed(x)


# ------------------------------------------------------------------ weights


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_load_weights_roundtrip(tmp_path, suffix: str) -> None:
    src = fv.build_fastvit(TINY_HD, with_head=True, seed=1)
    _perturb(src, seed=1)
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": src.state_dict()}, path)
    dst = fv.load_weights(fv.build_fastvit(TINY_HD, with_head=True, seed=2), path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))
    # timm's layout: the CLIP projection as a Linear with an all-zero bias
    timm_sd = dict(src.state_dict(), **{"head.fc.bias": torch.zeros(TINY_HD.clip_dim)})
    torch.save(timm_sd, tmp_path / "timm.pt")
    fv.load_weights(fv.build_fastvit(TINY_HD, with_head=True), tmp_path / "timm.pt")
    timm_sd["head.fc.bias"] = torch.ones(TINY_HD.clip_dim)
    torch.save(timm_sd, tmp_path / "timm_bias.pt")
    with pytest.raises(UserError, match="unexpected keys: 1 \\(head.fc.bias\\)"):
        fv.load_weights(fv.build_fastvit(TINY_HD, with_head=True), tmp_path / "timm_bias.pt")
    # the VLM encoder (no head) takes the same file, ignoring head.*
    headless = fv.load_weights(fv.build_fastvit(TINY_HD, seed=2), path)
    with torch.no_grad():
        torch.testing.assert_close(headless(x), src(x))


def test_load_reparameterized_weights(tmp_path) -> None:
    src = fv.build_fastvit(TINY_MCI2, seed=1)
    _perturb(src)
    src.reparameterize()
    torch.save(src.state_dict(), tmp_path / "fused.pt")
    dst = fv.load_weights(fv.build_fastvit(TINY_MCI2, seed=2), tmp_path / "fused.pt")
    assert dst.reparameterized
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def test_load_weights_mismatch_names_keys(tmp_path) -> None:
    sd = fv.build_fastvit(TINY_HD).state_dict()
    sd.pop("stem.0.conv_kxk.0.conv.weight")
    sd.pop("final_conv.se.fc1.bias")
    sd["extra.weight"] = torch.zeros(3)
    sd["stages.0.blocks.0.mlp.fc1.bias"] = torch.zeros(5)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(UserError) as e:
        fv.load_weights(fv.build_fastvit(TINY_HD), tmp_path / "bad.pt")
    msg = str(e.value)
    assert "missing keys: 2 (" in msg and "stem.0.conv_kxk.0.conv.weight" in msg
    assert "unexpected keys: 1 (extra.weight)" in msg
    assert "stages.0.blocks.0.mlp.fc1.bias" in msg and "\n" not in msg


def test_load_weights_refuses_pickled_objects_and_missing_files(tmp_path) -> None:
    torch.save({"x": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="cannot read weights"):
        fv.load_weights(fv.build_fastvit(TINY_HD), tmp_path / "evil.pt")
    with pytest.raises(UserError, match="not found"):
        fv.load_weights(fv.build_fastvit(TINY_HD), tmp_path / "nope.safetensors")
