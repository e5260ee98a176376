"""Each baseline as its publication ran it by default, each deviation a switch
(docs/methods.md): no augmentation and no foreground weighting where the publication has
none, its own post-processing of the maps and of the thresholded masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from disyre.config import RunConfig, apply_overrides
from disyre.inference import Detector
from disyre.methods import get_method
from tests.helpers import reinit_tiny_net, synthetic_cohort, tiny_config

BASELINES = ("dae", "anoddpm", "pddpm")


def _config(name: str, *sets: str) -> RunConfig:
    cfg = apply_overrides(tiny_config(steps=2), [f"corruption.name={name}",
                                                 "corruption.augment=null",
                                                 "inference.foreground_weighting=null",
                                                 *sets])
    cfg.inference.batch_size = 64
    return cfg


@pytest.mark.parametrize("name", BASELINES)
def test_a_baseline_trains_without_augmentation_unless_switched_on(name: str) -> None:
    from disyre.training import BatchSource
    from disyre.training.batches import shard_seed

    cohort = synthetic_cohort(4, seed=1)
    s = shard_seed(0, 3, 0)
    own = BatchSource(cohort, _config(name))
    clean = own.sample_shard(s)
    assert not own.augment
    assert torch.equal(own.shard(0, 3, 0).clean, clean)  # the patches as drawn
    on = BatchSource(cohort, _config(name, "corruption.augment=true"))
    assert on.augment
    assert torch.equal(on.sample_shard(s), clean)  # the same draw ...
    assert not torch.equal(on.shard(0, 3, 0).clean, clean)  # ... augmented


def test_disyre_keeps_its_augmentation_by_default() -> None:
    from disyre.training import BatchSource

    assert BatchSource(synthetic_cohort(4, seed=1), _config("dag")).augment


def _detector(name: str, *sets: str) -> Detector:
    cfg = _config(name, "inference.window=0", *sets)
    return Detector(reinit_tiny_net(3), cfg, device="cpu", channels_last=False)


@pytest.mark.parametrize("name", ("dae", "pddpm"))
def test_a_baselines_map_is_not_foreground_weighted_unless_switched_on(name: str) -> None:
    vol = synthetic_cohort(1, seed=2)[0]
    mask = vol > 0
    own = _detector(name, "inference.median_filter=0")
    assert own.inference.foreground_weighting is False
    off = _detector(name, "inference.median_filter=0",
                    "inference.foreground_weighting=false")
    on = _detector(name, "inference.median_filter=0",
                   "inference.foreground_weighting=true")
    a, b, c = (d.map_preprocessed(vol, mask) for d in (own, off, on))
    np.testing.assert_array_equal(a, b)
    assert float(np.abs(a - c).max()) > 1e-3  # the weighting changes the map at the edge
    assert _detector("dag").inference.foreground_weighting is True


def test_an_old_checkpoints_explicit_settings_keep_their_behaviour() -> None:
    """Configs saved before the switches recorded ``augment: true`` and
    ``foreground_weighting: true``: both stay on for a baseline."""
    d = _config("dae").to_dict()
    d["corruption"]["augment"] = True
    d["inference"]["foreground_weighting"] = True
    cfg = RunConfig.from_dict(d)
    assert get_method("dae").augments(cfg.corruption)
    assert get_method("dae").resolved_inference(cfg.inference).foreground_weighting is True
