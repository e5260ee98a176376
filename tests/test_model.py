"""Tests of the restoration network presets and its input checks."""

from __future__ import annotations

import pytest
import torch

from disyre.config import ConfigError, ModelConfig
from disyre.model import build_model, compile_network, count_parameters, use_channels_last
from tests.helpers import reinit_tiny_net


def test_paper_preset_has_authors_parameter_count() -> None:
    net = build_model(ModelConfig.from_preset("paper"))
    assert count_parameters(net) == 26_296_929


def test_presets_are_ordered_by_size() -> None:
    sizes = [count_parameters(build_model(ModelConfig.from_preset(p))) for p in
             ("tiny", "small")]
    assert sizes[0] < 200_000 < sizes[1] < 3_000_000


def test_forward_shape_and_level_conditioning() -> None:
    # re-initialised: a fresh MONAI net zeroes its last conv, and its output ignores the level
    net = reinit_tiny_net()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        y0 = net(x, torch.tensor([0, 0, 0]))
        y1 = net(x, torch.tensor([0, 50, 99]))
        ys = net(x, torch.tensor(0))  # a scalar level applies to the whole batch
    assert y0.shape == x.shape
    assert torch.allclose(y0[0], y1[0])
    assert not torch.allclose(y0[1], y1[1])
    assert torch.allclose(ys, y0)


def test_3d_forward_depends_on_the_volume_and_the_level() -> None:
    net = reinit_tiny_net(cfg=ModelConfig.from_preset("tiny", spatial_dims=3))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 16, 16, 16, generator=gen)
    with torch.no_grad():
        y = net(x, torch.tensor([10, 10]))
        y_level = net(x, torch.tensor([10, 90]))
        x2 = x.clone()
        x2[1, 0, 4:8, 4:8, 4:8] = 1.0  # change one block of the second volume
        y_input = net(x2, torch.tensor([10, 10]))
    assert y.shape == x.shape
    assert y.abs().max() > 0
    # each volume of the batch is restored on its own, and the output follows the input ...
    torch.testing.assert_close(y_input[0], y[0])
    assert (y_input[1] - y[1]).abs().max() > 1e-3
    # ... and the level
    torch.testing.assert_close(y_level[0], y[0])
    assert (y_level[1] - y[1]).abs().max() > 1e-3


def test_bad_inputs_raise_clear_errors() -> None:
    net = build_model(ModelConfig.from_preset("tiny"))
    with pytest.raises(ValueError, match="multiple of 4"):
        net(torch.rand(1, 1, 30, 32), torch.tensor([0]))
    with pytest.raises(ValueError, match="expected input"):
        net(torch.rand(1, 2, 32, 32), torch.tensor([0]))
    with pytest.raises(ConfigError, match="norm_num_groups"):
        build_model(ModelConfig.from_preset("tiny", channels=[8, 12, 16]))
    with pytest.raises(ConfigError, match="same length"):
        build_model(ModelConfig.from_preset("tiny", attention_levels=[False, False]))


# ---------------------------------------------------------------- speed levers: same outputs
def _random(cfg: ModelConfig, seed: int = 0, **kw: object) -> torch.nn.Module:
    return reinit_tiny_net(seed, cfg, **kw)  # a fresh MONAI U-Net outputs exactly zero


def _out_and_grads(net: torch.nn.Module, x: torch.Tensor, level: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    net.zero_grad(set_to_none=True)
    y = net(x, level)
    (y.float() ** 2).mean().backward()
    g = torch.cat([p.grad.flatten() for p in net.parameters()])
    return y.detach().float().contiguous(), g


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


ATTN = dict(attention_levels=[False, False, True], num_head_channels=8)
X = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
LV = torch.tensor([0, 60])


def test_sdpa_attention_matches_monai_einsum_reference() -> None:
    cfg = ModelConfig.from_preset("tiny", **ATTN)
    fast = _random(cfg)
    ref = build_model(cfg, sdpa=False)
    ref.load_state_dict(fast.state_dict())
    assert any(getattr(m, "use_flash_attention", False) for m in fast.modules())
    assert not any(getattr(m, "use_flash_attention", False) for m in ref.modules())
    y, g = _out_and_grads(fast, X, LV)
    y_ref, g_ref = _out_and_grads(ref, X, LV)
    # fp32, same maths in another order: 1e-5 relative
    assert _rel(y, y_ref) < 1e-5 and _rel(g, g_ref) < 1e-5


def test_channels_last_matches_contiguous() -> None:
    cfg = ModelConfig.from_preset("tiny", **ATTN)
    net = _random(cfg)
    y_ref, g_ref = _out_and_grads(net, X, LV)
    net = net.to(memory_format=torch.channels_last)
    y, g = _out_and_grads(net, X.contiguous(memory_format=torch.channels_last), LV)
    # oneDNN/cuDNN pick other convolution kernels for this layout: 5e-4 relative
    assert _rel(y, y_ref) < 5e-4 and _rel(g, g_ref) < 5e-4


def test_channels_last_is_chosen_per_device_and_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    from disyre import model as model_mod

    small = ModelConfig.from_preset("small")
    assert use_channels_last(small, "cuda") and not use_channels_last(small, "cuda", False)
    assert not use_channels_last(ModelConfig.from_preset("small", spatial_dims=3), "cuda")
    monkeypatch.setattr(model_mod, "CPU_CHANNELS_LAST", {
        ("small", "fp32", "train"): True, ("small", "bf16", "train"): False,
        ("small", "bf16", "inference"): True})
    assert use_channels_last(small, "cpu", precision="fp32")
    assert not use_channels_last(small, "cpu", precision="bf16")
    assert use_channels_last(small, "cpu", precision="bf16", mode="inference")
    assert not use_channels_last(small, "cpu", precision="fp32", mode="inference")
    assert not use_channels_last(small, "cpu", allowed=False, precision="fp32")
    assert not use_channels_last(ModelConfig.from_preset("paper"), "cpu", precision="fp32")
    with pytest.raises(ValueError, match="mode"):
        use_channels_last(small, "cpu", mode="eval")


def test_compile_keeps_names_and_matches_eager() -> None:
    # the aot_eager backend traces forward and backward like inductor but runs them eagerly:
    # it checks the wiring in seconds (inductor itself: the slow test below, and on CUDA)
    cfg = ModelConfig.from_preset("tiny", **ATTN)
    net = _random(cfg)
    y_ref, g_ref = _out_and_grads(net, X, LV)
    names = list(net.state_dict())
    compile_network(net, backend="aot_eager")
    assert net.compiled and list(net.state_dict()) == names
    y, g = _out_and_grads(net, X, LV)
    assert _rel(y, y_ref) < 1e-6 and _rel(g, g_ref) < 1e-6


@pytest.mark.slow
def test_compile_inductor_matches_eager_on_cpu() -> None:
    cfg = ModelConfig.from_preset("tiny", **ATTN)
    net = _random(cfg)
    y_ref, g_ref = _out_and_grads(net, X, LV)
    compile_network(net)
    y, g = _out_and_grads(net, X, LV)
    # generated kernels reorder fp32 sums (GroupNorm+SiLU fused): 1e-4 relative
    assert _rel(y, y_ref) < 1e-4 and _rel(g, g_ref) < 1e-4


def test_training_with_compile_follows_eager(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import numpy as np

    from disyre.config import RunConfig, SamplerConfig
    from disyre.training import loop, train

    monkeypatch.setattr(loop, "compile_network",
                        lambda m: compile_network(m, backend="eager"))
    rng = np.random.default_rng(0)
    vols = [np.pad(0.3 + 0.5 * rng.random((4, 24, 24), dtype=np.float32), ((0, 0), (4, 4),
                                                                           (4, 4)))
            for _ in range(3)]
    losses = {}
    for flag in (False, True):
        cfg = RunConfig()
        cfg.model = ModelConfig.from_preset("tiny")
        cfg.sampler = SamplerConfig(n_volumes=2, n_slices=2, patch_size=32)
        cfg.corruption.window = 16
        t = cfg.train
        t.steps, t.warmup_steps, t.lr, t.device, t.precision = 4, 1, 2e-3, "cpu", "fp32"
        t.compile, t.ckpt_every = flag, 4
        out = tmp_path / str(flag)
        losses[flag] = train(cfg, vols, None, out, progress=False).losses
        assert json.loads((out / "run.json").read_text())["runtime"]["compile"] is flag
    assert losses[False][-1] != losses[False][0]  # the weights moved
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)


def test_detector_compiles_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from disyre import model as model_mod
    from disyre.config import RunConfig
    from disyre.inference import Detector

    monkeypatch.setattr(model_mod, "compile_network",
                        lambda m: compile_network(m, backend="eager"))
    cfg = RunConfig()
    cfg.model = ModelConfig.from_preset("tiny")
    cfg.inference.window, cfg.inference.stride, cfg.inference.precision = 32, 16, "fp32"
    cfg.inference.batch_size = 20  # one slice, 4 windows x 5 levels: one batch, one shape
    vol = np.zeros((1, 40, 40), np.float32)
    vol[:, 4:36, 4:36] = np.random.default_rng(0).random((1, 32, 32), dtype=np.float32)
    maps = []
    for flag in (False, True):
        cfg.inference.compile = flag
        det = Detector(_random(cfg.model), cfg, device="cpu")
        maps.append(det.map_preprocessed(vol, vol > 0))
        assert getattr(det.model, "compiled", False) is flag
    assert maps[0].max() > 0
    np.testing.assert_allclose(maps[1], maps[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------- CUDA (benchmarks/tools/gpu_check.sh)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_levers_match_eager() -> None:
    cfg = ModelConfig.from_preset("tiny", **ATTN)
    dev = torch.device("cuda")
    net = _random(cfg).to(dev)
    x, lv = X.to(dev), LV.to(dev)
    y_ref, g_ref = _out_and_grads(net, x, lv)
    net = net.to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    y, g = _out_and_grads(net, xc, lv)
    # cuDNN may pick other algorithms (TF32 convolutions): 1e-3 relative
    assert _rel(y, y_ref) < 1e-3 and _rel(g, g_ref) < 1e-3
    compile_network(net)  # inductor: Triton kernels (bf16 compiled: benchmarks/tools/gpu_check.sh)
    y, g = _out_and_grads(net, xc, lv)
    assert _rel(y, y_ref) < 1e-3 and _rel(g, g_ref) < 1e-3
