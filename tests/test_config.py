import pytest

import disyre.methods  # noqa: F401 (the registry: the method-specific rules)
from disyre.config import ConfigError, ModelConfig, RunConfig, apply_overrides
from disyre.corruption.schedule import (
    ENSEMBLE_LEVELS_4,
    ENSEMBLE_LEVELS_5,
    SEVERITIES,
    level_of,
    multistep_levels,
    severity_of,
)


def test_roundtrip_yaml_and_json(tmp_path):
    cfg = apply_overrides(RunConfig(), ["model.preset=small", "train.steps=7",
                                        "inference.levels=[0,25,50,75]"])
    for name in ("c.yaml", "c.json"):
        cfg.save(tmp_path / name)
        assert RunConfig.load(tmp_path / name) == cfg
    assert cfg.model == ModelConfig.from_preset("small")
    assert cfg.inference.levels == [0, 25, 50, 75]


def test_bad_overrides_and_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(RunConfig(), ["train.stepz=3"])
    with pytest.raises(ConfigError, match="integer"):
        apply_overrides(RunConfig(), ["train.steps=abc"])
    with pytest.raises(ConfigError, match="preset"):
        apply_overrides(RunConfig(), ["model.preset=huge"])
    p = tmp_path / "bad.yaml"
    p.write_text("train: {steps: 1, nope: 2}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*train\.nope"):
        RunConfig.load(p)


def test_schedule_convention():
    assert SEVERITIES.shape == (100,)
    assert bool((SEVERITIES[1:] > SEVERITIES[:-1]).all()), "severity grows with the level"
    assert float(SEVERITIES[0]) == pytest.approx(0.0045, abs=1e-4)
    assert float(SEVERITIES[-1]) == pytest.approx(0.9995, abs=1e-4)
    sev5 = severity_of(__import__("torch").tensor(ENSEMBLE_LEVELS_5))
    assert sev5.tolist() == pytest.approx([0.0045, 0.033, 0.15, 0.44, 0.82], abs=0.01)
    sev4 = severity_of(__import__("torch").tensor(ENSEMBLE_LEVELS_4))
    assert sev4.tolist() == pytest.approx([0.0045, 0.051, 0.27, 0.73], abs=0.01)
    # level_of inverts severity_of
    import torch

    k = torch.arange(100)
    assert torch.equal(level_of(severity_of(k)), k)
    assert multistep_levels(5) == [80, 60, 40, 20, 0]


def test_whole_config_is_validated_at_load(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("inference: {levels: [0, 120], precision: fp16}\n"
                 "train: {val_every: 0, ckpt_every: 0}\n")
    with pytest.raises(ConfigError) as e:
        RunConfig.load(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{p}: invalid config")
    for key in ("inference.levels", "inference.precision", "train.val_every",
                "train.ckpt_every"):
        assert key in msg
    for bad in (["inference.levels=[-1]"], ["train.log_every=0"], ["train.precision=fp16"],
                ["inference.stride=0", "inference.window=128"], ["inference.method=ddim"],
                ["corruption.name=nope"],
                ["model.spatial_dims=3"], ["intensity.upper_percentile=101"],
                ["train.ema_decay=1.5"], ["inference.steps=0"]):
        key = bad[0].split("=")[0]
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            apply_overrides(RunConfig(), bad)
    # valid edge values pass
    apply_overrides(RunConfig(), ["inference.levels=[0,99]", "inference.window=0",
                                  "train.ema_decay=0.999", "inference.precision=bf16"])


def test_the_cli_reports_an_invalid_config_in_one_line(tmp_path, capsys):
    from disyre.cli import main

    p = tmp_path / "run.yaml"
    p.write_text("train: {log_every: 0}\n")
    assert main(["train", "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "run"),
                 "--config", str(p)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run.yaml" in err and "train.log_every" in err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_validate_names_every_bad_field_at_once():
    cfg = RunConfig()
    cfg.intensity.scaling = "z"
    cfg.intensity.reference_volume_ml = 0
    cfg.corruption.shapes = "round"
    cfg.corruption.bias_selection = "all"
    cfg.corruption.augment_recipe = "none"
    cfg.corruption.window = 3  # the synthetic anomalies refuse windows < 4
    cfg.train.device = "gpu"
    cfg.inference.device = "cuda:x"
    cfg.train.keep_last = -1
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    msg = str(e.value)
    assert "\n" not in msg
    for key in ("intensity.scaling", "intensity.reference_volume_ml", "corruption.shapes",
                "corruption.bias_selection", "corruption.augment_recipe", "corruption.window",
                "train.device", "inference.device", "train.keep_last"):
        assert key in msg, key
    ok = RunConfig()
    ok.train.device, ok.inference.device, ok.train.keep_last = "cuda:1", "cpu", 0
    ok.validate()


def test_the_window_config_accepts_is_what_the_corruption_accepts():
    from disyre.methods import make_corruption

    for w in (3, 4):
        cfg = RunConfig()
        cfg.corruption.window = w
        try:
            cfg.validate()
            config_ok = True
        except ConfigError:
            config_ok = False
        try:
            make_corruption(cfg.corruption)
            corruption_ok = True
        except ValueError:
            corruption_ok = False
        assert config_ok == corruption_ok == (w >= 4)


def test_option_lists_live_in_config():
    import importlib
    import typing

    from disyre import config, runtime
    from disyre.config import IntensityConfig, TrainConfig

    augment, bias, shapes, intensity = (importlib.import_module(f"disyre.{m}") for m in (
        "corruption.augment", "corruption.bias", "corruption.shapes", "data.intensity"))

    assert runtime.PRECISIONS is config.PRECISIONS
    assert augment.AUGMENT_RECIPES is config.AUGMENT_RECIPES
    assert shapes.SHAPE_RECIPES is config.SHAPE_RECIPES
    assert bias.BIAS_SELECTIONS is config.BIAS_SELECTIONS
    assert intensity.SCALINGS is config.SCALINGS
    assert typing.get_args(typing.get_type_hints(IntensityConfig)["scaling"]) == config.SCALINGS
    assert typing.get_args(typing.get_type_hints(TrainConfig)["precision"]) == config.PRECISIONS


def test_unknown_keys_are_all_named():
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"x": 1, "train": {"y": 1, "lr": 1e-3}, "model": {"q": 1}})
    msg = str(e.value)
    assert all(k in msg for k in ("'x'", "train.y", "model.q"))
    with pytest.raises(ConfigError) as e:
        apply_overrides(RunConfig(), ["train.nope=1", "train.lr=1e-3", "model.nada=2"])
    assert "train.nope" in str(e.value) and "model.nada" in str(e.value)


@pytest.mark.parametrize("value,problem", [
    ("inference.levels=[0,25", "inference.levels"),
    ("train.lr=!!python/object/apply:os.system [ls]", "train.lr"),
])
def test_a_malformed_set_value_is_one_line(tmp_path, capsys, value, problem):
    from disyre.cli import main

    code = main(["train", "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "run"),
                 "--set", value])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.count("\n") == 0 and "Traceback" not in err
    assert problem in err and "not valid YAML" in err
    assert not (tmp_path / "run").exists()


def test_a_malformed_config_file_is_one_line(tmp_path, capsys):
    from disyre.cli import main

    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  lr: [1e-3\n")
    code = main(["train", "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "run"),
                 "--config", str(p)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "Traceback" not in err
    assert "bad.yaml" in err and "not valid YAML" in err and "line" in err
    p.write_text("train: !!python/object/apply:os.system [ls]\n")
    assert main(["train", "--cache", str(tmp_path / "c"), "-o", str(tmp_path / "run"),
                 "--config", str(p)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.yaml" in err

