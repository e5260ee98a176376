"""Tests of the restoration network presets and its input checks."""

from __future__ import annotations

import pytest
import torch

from disyre.config import ConfigError, ModelConfig
from disyre.model import build_model, count_parameters


def test_paper_preset_has_authors_parameter_count() -> None:
    net = build_model(ModelConfig.from_preset("paper"))
    assert count_parameters(net) == 26_296_929


def test_presets_are_ordered_by_size() -> None:
    sizes = [count_parameters(build_model(ModelConfig.from_preset(p))) for p in
             ("tiny", "small")]
    assert sizes[0] < 200_000 < sizes[1] < 3_000_000


def test_forward_shape_and_level_conditioning() -> None:
    torch.manual_seed(0)
    net = build_model(ModelConfig.from_preset("tiny")).eval()
    # make the output depend on the level embedding (fresh MONAI nets zero their last conv)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        y0 = net(x, torch.tensor([0, 0, 0]))
        y1 = net(x, torch.tensor([0, 50, 99]))
        ys = net(x, torch.tensor(0))  # a scalar level applies to the whole batch
    assert y0.shape == x.shape
    assert torch.allclose(y0[0], y1[0])
    assert not torch.allclose(y0[1], y1[1])
    assert torch.allclose(ys, y0)


def test_3d_forward() -> None:
    cfg = ModelConfig.from_preset("tiny", spatial_dims=3)
    net = build_model(cfg)
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        y = net(x, torch.tensor([10]))
    assert y.shape == x.shape


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
