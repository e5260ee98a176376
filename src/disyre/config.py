"""Typed configuration of every stage, with YAML/JSON round trips and ``key=value`` overrides.

One dataclass per stage; :class:`RunConfig` bundles them. A run is reproducible from its
``RunConfig`` (it holds the seed), and every checkpoint and report stores the config that made it.

Example:
    >>> cfg = RunConfig()
    >>> cfg = apply_overrides(cfg, ["model.preset=small", "train.steps=200"])
    >>> cfg.model.preset, cfg.train.steps
    ('small', 200)
    >>> RunConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml


class ConfigError(ValueError):
    """A configuration value or file is invalid."""


# Every option list of the configs, once: a ``Literal`` for the type hints and a tuple for
# checks and messages. The stages that implement the options import them from here.

Scaling = Literal["whole_volume", "brain"]
#: the intensity scalings :func:`disyre.data.intensity.normalize` knows
SCALINGS: tuple[str, ...] = typing.get_args(Scaling)
NanPolicy = Literal["zero", "error"]
NAN_POLICIES: tuple[str, ...] = typing.get_args(NanPolicy)
ShapeRecipe = Literal["authors", "legacy"]
#: anomaly shape recipes (:mod:`disyre.corruption.shapes`)
SHAPE_RECIPES: tuple[str, ...] = typing.get_args(ShapeRecipe)
BiasSelection = Literal["authors", "single"]
#: intensity-bias level selections (:mod:`disyre.corruption.bias`)
BIAS_SELECTIONS: tuple[str, ...] = typing.get_args(BiasSelection)
AugmentRecipeName = Literal["authors", "legacy"]
#: pre-corruption augmentation recipes (:mod:`disyre.corruption.augment`)
AUGMENT_RECIPES: tuple[str, ...] = typing.get_args(AugmentRecipeName)
SimplexLattice = Literal["opensimplex", "perlin"]
#: simplex-noise lattices of the diffusion baselines (:mod:`disyre.corruption.simplex`)
SIMPLEX_LATTICES: tuple[str, ...] = typing.get_args(SimplexLattice)
PostProcessingName = Literal["published", "shared"]
#: map post-processing protocols (``inference.postprocessing``,
#: :mod:`disyre.inference.postprocess`): each method's published recipe, or the shared one
POSTPROCESSINGS: tuple[str, ...] = typing.get_args(PostProcessingName)
ObjectiveName = Literal["published", "shared"]
#: training objectives (``train.objective``): the method's own loss, or the shared MSE
OBJECTIVES: tuple[str, ...] = typing.get_args(ObjectiveName)
Precision = Literal["auto", "fp32", "bf16"]
#: autocast precisions of training and inference (``auto``: bf16 where the hardware has it)
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
#: device kinds a config may name (``cuda:N`` is also accepted)
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
#: smallest anomaly window of the synthetic anomalies (:mod:`disyre.corruption.dag`)
MIN_CORRUPTION_WINDOW: int = 4


class MethodCatalog(Protocol):
    """What the configs need from the method registry (:mod:`disyre.methods`), which sits
    downstream of this module and installs itself here on import (:func:`install_methods`)."""

    def problems(self, cfg: RunConfig) -> list[str]:
        """The method-specific problems of ``cfg`` (unknown method, its own rules)."""
        ...

    def inference_recipe(self, name: str, current: dict[str, Any]) -> dict[str, Any]:
        """The ``inference`` fields that switching to method ``name`` sets."""
        ...


_methods: MethodCatalog | None = None


def install_methods(catalog: MethodCatalog) -> None:
    """Make :meth:`RunConfig.validate` and :func:`apply_overrides` use ``catalog``'s
    method rules (called by :mod:`disyre.methods` on import)."""
    global _methods
    _methods = catalog


def valid_device(device: str) -> bool:
    """Whether ``device`` is one of :data:`DEVICES` or ``cuda:N``.

    Example:
        >>> valid_device("cuda:1"), valid_device("gpu")
        (True, False)
    """
    if device in DEVICES:
        return True
    kind, _, idx = device.partition(":")
    return kind == "cuda" and idx.isdigit()


@dataclass
class IntensityConfig:
    """Intensity normalisation and cropping (docs/method.md#data).

    Attributes:
        scaling: ``"whole_volume"`` (the authors': divide by the ``upper_percentile`` of the
            whole volume, background included, counted on a reference grid of
            ``reference_volume_ml``; see :func:`disyre.data.intensity.normalize`) or
            ``"brain"`` (map the ``lower_percentile`` and ``upper_percentile`` of the brain
            voxels to 0 and 1).
        lower_percentile: Percentile of brain intensities mapped to 0 (``brain`` only).
        upper_percentile: Percentile mapped to 1.
        reference_volume_ml: Volume of the reference grid of ``whole_volume`` scaling, in
            millilitres (default: 240 x 240 x 155 mm, the SRI24 / BraTS grid at 1 mm).
        crop_margin: Voxels kept around the foreground bounding box.
        nan_policy: ``"zero"`` (warn and replace NaN/Inf by 0) or ``"error"``.
    """

    scaling: Scaling = "whole_volume"
    lower_percentile: float = 0.0
    upper_percentile: float = 98.0
    reference_volume_ml: float = 8928.0
    crop_margin: int = 0
    nan_policy: NanPolicy = "zero"


@dataclass
class SamplerConfig:
    """Training batches: ``n_volumes`` x ``n_slices`` random axial slices -> patches.

    ``whole_slices``: draw whole slices, padded as detection pads them, instead of
    ``patch_size`` patches; ``null`` (the default) = the method's own
    (``Method.whole_slices``: ``pddpm``, whose publication trains on whole slices).
    """

    n_volumes: int = 8
    n_slices: int = 12
    patch_size: int = 128
    whole_slices: bool | None = None


@dataclass
class CorruptionConfig:
    """Synthetic corruption used in training (and, for ``gaussian``, at inference).

    Attributes:
        name: The method (:mod:`disyre.methods`): ``dag`` (default), ``fpi``, ``bias``,
            ``gaussian``, or a baseline of docs/methods.md: ``dae`` (denoising autoencoder,
            coarse noise), ``anoddpm`` (simplex-noise DDPM), ``pddpm`` (patched DDPM).
        window: Side of the square anomaly window in pixels (for ``pddpm``: the noised box).
        augment: Apply the pre-corruption augmentation of clean patches: ``null`` (the
            default) = the method's own recipe (``Method.augment``: on for DISYRE and its
            ablations, off for the baselines whose publications do not augment), ``true`` /
            ``false`` force it for any method (docs/methods.md).
        codebook: Intensity codebook for the bias anomaly; ``None`` = fit to the training
            data (falling back to the authors' values).
        shapes: Anomaly shape sizes: ``authors`` (the authors' size distribution) or
            ``legacy`` (smaller shapes, always centred in the window).
        bias_selection: Intensity-bias level picking: ``authors`` (quantise the
            texture-blended window, all levels when none is picked) or ``single`` (quantise
            the clean window, one level when none is picked).
        augment_recipe: Pre-corruption augmentation: ``authors`` or ``legacy``.
        simplex: The simplex noise of the diffusion baselines: ``opensimplex`` (the
            publications' OpenSimplex statistics) or ``perlin`` (the previous release's
            Perlin simplex, about 1.75x finer; what checkpoints without this key used).
    """

    name: str = "dag"
    window: int = 64
    augment: bool | None = None
    codebook: list[float] | None = None
    shapes: ShapeRecipe = "authors"
    bias_selection: BiasSelection = "authors"
    augment_recipe: AugmentRecipeName = "authors"
    simplex: SimplexLattice = "opensimplex"


#: The value each fidelity switch had before it existed: a saved run config (a checkpoint's
#: ``config.json``) that lacks the key was made with this behaviour (see :func:`legacy_filled`).
LEGACY_SWITCHES: dict[str, dict[str, str]] = {
    "intensity": {"scaling": "brain"},
    "corruption": {"shapes": "legacy", "bias_selection": "single", "augment_recipe": "legacy",
                   "simplex": "perlin"},
}

#: The same for the switches that make the baselines run as published (docs/methods.md): a
#: saved config without them trained and detected the shared way.
LEGACY_PUBLISHED_SWITCHES: dict[str, dict[str, Any]] = {
    "inference": {"postprocessing": "shared"},
    "train": {"objective": "shared"},
    "sampler": {"whole_slices": False},
}


def legacy_filled(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved run-config dict with the fidelity switches it lacks set to their legacy values.

    Every saved config holds all fields of its version, so a section without one of the
    switches of :data:`LEGACY_SWITCHES` or :data:`LEGACY_PUBLISHED_SWITCHES` comes from
    before that switch existed.

    Example:
        >>> legacy_filled({"intensity": {"upper_percentile": 98.0}})["intensity"]["scaling"]
        'brain'
    """
    out = dict(saved)
    for sec, keys in (*LEGACY_SWITCHES.items(), *LEGACY_PUBLISHED_SWITCHES.items()):
        if isinstance(out.get(sec), dict):
            out[sec] = {**keys, **out[sec]}
    return out


PRESETS: dict[str, dict[str, Any]] = {
    # The authors' network: 26,296,929 parameters.
    "paper": dict(
        channels=[32, 64, 96, 128, 256, 256],
        attention_levels=[False, False, False, False, True, False],
        num_res_blocks=2,
        num_head_channels=256,
        norm_num_groups=32,
    ),
    # CPU-sized network for demos (about 1 M parameters).
    "small": dict(
        channels=[16, 32, 64, 64],
        attention_levels=[False, False, False, False],
        num_res_blocks=1,
        num_head_channels=64,
        norm_num_groups=16,
    ),
    # Test-sized network (tens of thousands of parameters).
    "tiny": dict(
        channels=[8, 16, 16],
        attention_levels=[False, False, False],
        num_res_blocks=1,
        num_head_channels=16,
        norm_num_groups=8,
    ),
}


@dataclass
class ModelConfig:
    """Restoration network ``P(x, level)``; ``preset`` fills the architecture fields.

    Set ``preset`` to one of :data:`PRESETS` (``paper``, ``small``, ``tiny``) or to
    ``custom`` and give the fields yourself. Training and detection work on 2D axial slices,
    so a run needs ``spatial_dims=2``; the network alone can be built in 3D.
    """

    preset: str = "paper"
    spatial_dims: int = 2
    channels: list[int] = field(default_factory=lambda: list(PRESETS["paper"]["channels"]))
    attention_levels: list[bool] = field(
        default_factory=lambda: list(PRESETS["paper"]["attention_levels"])
    )
    num_res_blocks: int = 2
    num_head_channels: int = 256
    norm_num_groups: int = 32

    @classmethod
    def from_preset(cls, name: str, **kw: Any) -> ModelConfig:
        """Build the config of a named preset, with optional field overrides."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(preset=name, **{**PRESETS[name], **kw})


@dataclass
class TrainConfig:
    """Training recipe; defaults are the authors' (docs/method.md#network-and-training)."""

    steps: int = 100_000
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.95, 0.999])
    weight_decay: float = 1e-6
    eps: float = 1e-8
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_decay: float | None = None
    precision: Precision = "auto"  # auto = bf16 where the hardware has it
    val_every: int = 1000
    val_batches: int = 4
    ckpt_every: int = 1000
    keep_last: int = 3
    # checkpoints always written and never pruned (evaluate one run at several budgets)
    keep_steps: list[int] = field(default_factory=list)
    # stop when the validation loss has not improved for this many validations (0 = off;
    # train.steps stays the cap); an improvement must beat the best by min_delta (relative)
    patience: int = 0
    min_delta: float = 0.0
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    channels_last: bool = True  # where it helps: CUDA; CPU per model.CPU_CHANNELS_LAST
    compile: bool = False  # torch.compile the network (compiles at the first step)
    num_threads: int | None = None
    # micro-batches per process and step (same gradient, memory of one micro-batch); 0 = auto:
    # one on a GPU, on a CPU micro-batches of at most 16 patches of 128x128
    # (training.auto_grad_accum; measured in docs/training.md, "Speed levers")
    grad_accum: int = 0
    tensorboard: bool = False
    # ``published``: the method's own loss where it applies (Method.loss, Method.loss_region;
    # pddpm: L1 on the noised box); ``shared``: squared error over the patch for every method
    objective: ObjectiveName = "published"


@dataclass
class InferenceConfig:
    """Restoration at test time (docs/method.md#inference).

    Attributes:
        method: The restoration procedure (registered by :mod:`disyre.methods`):
            ``ensemble`` (v2 single-step, default) or ``multistep`` (v1); the baselines'
            ``walk`` (``anoddpm``) and ``patched`` (``pddpm``).
        levels: Corruption levels for the ensemble (our convention: level grows with
            severity); the default is the authors' 5-level set. For the diffusion
            baselines, diffusion steps in [0, 999]: the step ``walk`` noises to, the steps
            ``patched`` averages over.
        steps: Number of levels of the v1 multi-step restoration; network passes of the
            ``walk`` (strided evenly from ``levels[0]`` down to 0).
        window: Sliding-window side in pixels; 0 (the default) runs each whole slice through
            the network at once: as accurate or more than the authors' 128 px windows and 3-4x
            faster where measured (docs/detection.md, "Whole slices or windows").
        stride: Sliding-window stride in pixels (with whole slices: the spacing of the
            foreground weighting's windows).
        batch_size: Network inputs per pass (window x level pairs for the v2 ensemble).
        foreground_weighting: Multiply each window's map by its foreground fraction:
            ``null`` (the default) = the method's own recipe (``Method.foreground_weighting``:
            on for DISYRE, off for the baselines, whose publications do not weight),
            ``true`` / ``false`` force it.
        median_filter: Size in voxels of a 3D median filter applied to the brain's map
            (0 = off). Default 3: it raised pixel AP on both demo contrasts beyond the paired
            bootstrap interval and cut false-positive blobs about tenfold
            (docs/detection.md, "Median filter"). The filter of the ``shared`` protocol.
        postprocessing: ``published`` (the default): the method's own published
            post-processing (:data:`disyre.inference.postprocess.PUBLISHED`: brain-mask
            erosion, median filter size and dimension, and after thresholding the removal
            of small connected components); for DISYRE and the methods without a published
            recipe of their own it is the shared one. ``shared``: every method the same
            (``median_filter`` in 3D inside the brain mask, nothing after thresholding); a
            checkpoint saved before this setting existed reads as ``shared``.
        precision: ``auto`` | ``fp32`` | ``bf16``.
        compile: ``torch.compile`` the network (compiles at the first pass).
        channels_last: Allow the channels-last layout where it helps (CUDA; the CPU
            presets and precisions in ``model.CPU_CHANNELS_LAST``); ``False`` keeps the
            default layout everywhere.
    """

    method: str = "ensemble"
    levels: list[int] = field(default_factory=lambda: [0, 20, 40, 60, 80])
    steps: int = 5
    window: int = 0
    stride: int = 32
    batch_size: int = 32
    foreground_weighting: bool | None = None
    median_filter: int = 3
    postprocessing: PostProcessingName = "published"
    precision: Precision = "auto"
    device: str = "auto"
    compile: bool = False
    channels_last: bool = True


@dataclass
class RunConfig:
    """Everything that defines a training run and how its model is applied."""

    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    corruption: CorruptionConfig = field(default_factory=CorruptionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/YAML serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Strict inverse of :meth:`to_dict`: unknown keys and invalid values (see
        :meth:`validate`) raise :class:`ConfigError`."""
        cfg = _from_dict(cls, d, "")
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check every value at once, so that a bad setting fails at load, not hours later.

        The generic rules live here; the method's own (is ``corruption.name`` a registered
        method, its levels, restorations and settings) come from the method registry that
        :mod:`disyre.methods` installs on import (:func:`install_methods`): code that builds
        a config for use imports :mod:`disyre.methods` first.

        Raises:
            ConfigError: One line naming every invalid ``section.key`` and why.

        Example:
            >>> cfg = RunConfig()
            >>> cfg.inference.levels = [0, 120]
            >>> cfg.train.val_every = 0
            >>> cfg.validate()  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            disyre.config.ConfigError: invalid config: train.val_every must be >= 1, got 0; ...
        """
        bad: list[str] = []

        def need(ok: bool, key: str, what: str, value: Any) -> None:
            if not ok:
                bad.append(f"{key} must be {what}, got {value!r}")

        i, sa, c, m, t, f = (self.intensity, self.sampler, self.corruption, self.model,
                             self.train, self.inference)
        need(0 <= i.lower_percentile < 100, "intensity.lower_percentile", "in [0, 100)",
             i.lower_percentile)
        need(i.lower_percentile < i.upper_percentile <= 100, "intensity.upper_percentile",
             f"in (intensity.lower_percentile={i.lower_percentile}, 100]", i.upper_percentile)
        need(i.crop_margin >= 0, "intensity.crop_margin", ">= 0", i.crop_margin)
        need(i.scaling in SCALINGS, "intensity.scaling", _choice(SCALINGS), i.scaling)
        need(i.reference_volume_ml > 0, "intensity.reference_volume_ml", "> 0",
             i.reference_volume_ml)
        need(i.nan_policy in NAN_POLICIES, "intensity.nan_policy", _choice(NAN_POLICIES),
             i.nan_policy)
        for k in ("n_volumes", "n_slices", "patch_size"):
            need(getattr(sa, k) >= 1, f"sampler.{k}", ">= 1", getattr(sa, k))
        need(c.shapes in SHAPE_RECIPES, "corruption.shapes", _choice(SHAPE_RECIPES), c.shapes)
        need(c.bias_selection in BIAS_SELECTIONS, "corruption.bias_selection",
             _choice(BIAS_SELECTIONS), c.bias_selection)
        need(c.simplex in SIMPLEX_LATTICES, "corruption.simplex", _choice(SIMPLEX_LATTICES),
             c.simplex)
        need(c.augment_recipe in AUGMENT_RECIPES, "corruption.augment_recipe",
             _choice(AUGMENT_RECIPES), c.augment_recipe)
        need(c.codebook is None or (len(c.codebook) > 0 and all(0 <= v <= 1 for v in c.codebook)),
             "corruption.codebook", "null or intensities in [0, 1]", c.codebook)
        need(m.preset in PRESETS or m.preset == "custom", "model.preset",
             f"one of {sorted(PRESETS)} or custom", m.preset)
        need(m.spatial_dims == 2, "model.spatial_dims",
             "2 (training and detection work on 2D slices)", m.spatial_dims)
        need(len(m.channels) >= 1 and len(m.channels) == len(m.attention_levels),
             "model.channels/attention_levels", "lists of the same length",
             (m.channels, m.attention_levels))
        need(m.norm_num_groups >= 1 and all(ch % m.norm_num_groups == 0 for ch in m.channels),
             "model.channels", f"multiples of model.norm_num_groups={m.norm_num_groups}",
             m.channels)
        need(m.num_res_blocks >= 1, "model.num_res_blocks", ">= 1", m.num_res_blocks)
        need(m.num_head_channels >= 1, "model.num_head_channels", ">= 1", m.num_head_channels)
        need(t.steps >= 1, "train.steps", ">= 1", t.steps)
        need(t.lr > 0, "train.lr", "> 0", t.lr)
        need(len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "train.betas",
             "two numbers in [0, 1)", t.betas)
        need(t.weight_decay >= 0, "train.weight_decay", ">= 0", t.weight_decay)
        need(t.eps > 0, "train.eps", "> 0", t.eps)
        need(t.warmup_steps >= 0, "train.warmup_steps", ">= 0", t.warmup_steps)
        need(t.ema_decay is None or 0 < t.ema_decay < 1, "train.ema_decay", "null or in (0, 1)",
             t.ema_decay)
        need(t.precision in PRECISIONS, "train.precision", _choice(PRECISIONS), t.precision)
        need(isinstance(t.device, str) and valid_device(t.device), "train.device",
             _choice(DEVICES) + " or cuda:N", t.device)
        need(t.keep_last >= 0, "train.keep_last", ">= 0 (0 = keep every checkpoint)",
             t.keep_last)
        need(all(isinstance(k, int) and k >= 1 for k in t.keep_steps), "train.keep_steps",
             "steps >= 1", t.keep_steps)
        need(t.patience >= 0, "train.patience", ">= 0 (0 = off)", t.patience)
        need(0 <= t.min_delta < 1, "train.min_delta", "in [0, 1) (relative improvement)",
             t.min_delta)
        for k in ("val_every", "ckpt_every", "log_every"):
            need(getattr(t, k) >= 1, f"train.{k}", ">= 1", getattr(t, k))
        need(t.grad_accum >= 0, "train.grad_accum", ">= 0 (0 = auto)", t.grad_accum)
        need(t.objective in OBJECTIVES, "train.objective", _choice(OBJECTIVES), t.objective)
        need(t.val_batches >= 0, "train.val_batches", ">= 0", t.val_batches)
        need(t.num_threads is None or t.num_threads >= 1, "train.num_threads", "null or >= 1",
             t.num_threads)
        need(f.window >= 0, "inference.window", ">= 0 (0 = whole slices)", f.window)
        need(1 <= f.stride and (f.window == 0 or f.stride <= f.window), "inference.stride",
             f"in [1, inference.window={f.window}]" if f.window else ">= 1", f.stride)
        need(f.batch_size >= 1, "inference.batch_size", ">= 1", f.batch_size)
        need(f.median_filter >= 0, "inference.median_filter", ">= 0 (0 = off)", f.median_filter)
        need(f.postprocessing in POSTPROCESSINGS, "inference.postprocessing",
             _choice(POSTPROCESSINGS), f.postprocessing)
        need(f.precision in PRECISIONS, "inference.precision", _choice(PRECISIONS),
             f.precision)
        need(isinstance(f.device, str) and valid_device(f.device), "inference.device",
             _choice(DEVICES) + " or cuda:N", f.device)
        if _methods is not None:
            bad += _methods.problems(self)
        if bad:
            raise ConfigError("invalid config: " + "; ".join(bad))

    def save(self, path: str | Path) -> None:
        """Write as YAML (``.yaml``/``.yml``) or JSON (any other suffix), atomically."""
        from disyre.io_utils import atomic_write_text

        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        else:
            text = json.dumps(self.to_dict(), indent=2)
        atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Read a YAML or JSON config file; missing sections take their defaults."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            d = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML/JSON ({_yaml_problem(e)})") from e
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the config file ({e})") from e
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: the problem and where (``line L, column C``)."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def _choice(options: tuple[str, ...]) -> str:
    return "one of " + ", ".join(options)


def _resolve_type(tp: Any) -> Any:
    return tp


def _from_dict(cls: type, d: dict[str, Any], prefix: str,
               errors: tuple[list[str], list[str]] | None = None) -> Any:
    """Build ``cls`` from ``d``; every unknown key and ill-typed value is collected and, at the
    top level (``errors`` not given), raised as one :class:`ConfigError`."""
    top = errors is None
    unknown_keys, errs = ([], []) if errors is None else errors
    if not isinstance(d, dict):
        errs.append(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got "
                    f"{type(d).__name__}")
        d = {}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown_keys.extend(prefix + k for k in sorted(str(k) for k in set(d) - names))
    kw = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        tp = hints[f.name]
        v = d[f.name]
        if dataclasses.is_dataclass(tp):
            kw[f.name] = _from_dict(tp, v, f"{prefix}{f.name}.", (unknown_keys, errs))
        else:
            try:
                kw[f.name] = _coerce(v, tp, f"{prefix}{f.name}")
            except ConfigError as e:
                errs.append(str(e))
    if top and (unknown_keys or errs):
        head = [f"unknown key(s) {unknown_keys}"] if unknown_keys else []
        raise ConfigError("; ".join(head + errs))
    obj = cls(**kw)
    if isinstance(obj, ModelConfig) and "preset" in d and obj.preset in PRESETS:
        # preset fills architecture fields that the dict does not set explicitly
        for k, val in PRESETS[obj.preset].items():
            if k not in d:
                setattr(obj, k, list(val) if isinstance(val, list) else val)
    return obj


def _coerce(v: Any, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        errs = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(v, a, name)
            except ConfigError as e:
                errs.append(str(e))
        raise ConfigError("; ".join(errs))
    if origin is list:
        if isinstance(v, tuple):
            v = list(v)
        if not isinstance(v, list):
            raise ConfigError(f"{name}: expected a list, got {v!r}")
        return [_coerce(x, args[0], f"{name}[]") for x in v] if args else v
    if origin is Literal:
        if not isinstance(v, str):
            raise ConfigError(f"{name}: expected a string ({', '.join(args)}), got {v!r}")
        return v
    if tp is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in ("true", "false", "1", "0", "yes", "no"):
            return v.lower() in ("true", "1", "yes")
        raise ConfigError(f"{name}: expected true/false, got {v!r}")
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise ConfigError(f"{name}: expected an integer, got {v!r}")
        try:
            f = float(v)
        except ValueError as e:
            raise ConfigError(f"{name}: expected an integer, got {v!r}") from e
        if f != int(f):
            raise ConfigError(f"{name}: expected an integer, got {v!r}")
        return int(f)
    if tp is float:
        if isinstance(v, bool):
            raise ConfigError(f"{name}: expected a number, got {v!r}")
        try:
            return float(v)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{name}: expected a number, got {v!r}") from e
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"{name}: expected a string, got {v!r}")
        return v
    return v


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Return a copy of ``cfg`` with ``section.key=value`` overrides applied.

    Values are parsed as YAML scalars/lists (``train.steps=200``,
    ``inference.levels=[0,25,50,75]``). Setting ``model.preset`` resets the architecture
    fields to that preset before other ``model.*`` overrides apply; setting
    ``corruption.name`` applies that method's inference recipe
    (:meth:`disyre.methods.Method.inference_recipe`, through the installed registry) before
    other ``inference.*`` overrides apply.
    """
    d = cfg.to_dict()
    items = []
    bad: list[str] = []
    for ov in overrides:
        if "=" not in ov:
            bad.append(f"override {ov!r} is not of the form section.key=value")
            continue
        key, raw = ov.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2:
            bad.append(f"override key {key!r} must be section.key")
            continue
        sec, k = parts
        if sec not in d:
            bad.append(f"unknown config section {sec!r}; choose from {sorted(d)}")
            continue
        if k not in d[sec]:
            bad.append(f"unknown key {sec}.{k}; choose from {sorted(d[sec])}")
            continue
        try:
            val = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            bad.append(f"--set {key.strip()}: value {raw!r} is not valid YAML "
                       f"({_yaml_problem(e)})")
            continue
        items.append((parts, val))
    if bad:
        raise ConfigError("; ".join(bad))
    # presets and a corruption's inference recipe first, so that explicit fields win
    items.sort(key=lambda it: 0 if it[0] in (["model", "preset"], ["corruption", "name"])
               else 1)
    for (sec, k), val in items:
        if sec == "corruption" and k == "name" and isinstance(val, str) and _methods:
            d["inference"].update(_methods.inference_recipe(val, d["inference"]))
        if sec == "model" and k == "preset":
            if val not in PRESETS and val != "custom":
                raise ConfigError(f"unknown model preset {val!r}; choose from {sorted(PRESETS)}")
            if val in PRESETS:
                d["model"].update({kk: list(vv) if isinstance(vv, list) else vv
                                   for kk, vv in PRESETS[val].items()})
        d[sec][k] = val
    return RunConfig.from_dict(d)
