"""A method's whole recipe (:class:`Method`), the registry of methods and of their restoration
procedures (:class:`Restoration`).

A method is what ``corruption.name`` names in a run config: how training corrupts clean
patches and what the network learns from them, and how detection restores a scan. Each method
module of this package builds one :class:`Method` and calls :func:`register`; importing
:mod:`disyre.methods` registers them all and installs the registry in
:mod:`disyre.config`, whose validation and ``corruption.name`` overrides then know them.

Example:
    >>> import disyre.methods
    >>> m = get_method("anoddpm")
    >>> m.target, m.max_level, m.inference["method"]
    ('noise', 999, 'walk')
    >>> get_method("nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    disyre.config.ConfigError: unknown method 'nope'; choose from dag, fpi, bias, ...
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import nn

from disyre import config as _config
from disyre.config import ConfigError, CorruptionConfig, InferenceConfig, RunConfig
from disyre.corruption.base import Corruption
from disyre.runtime import autocast

__all__ = [
    "CorruptionFactory",
    "InferenceInput",
    "Method",
    "Restoration",
    "RestoreFn",
    "forward",
    "get_method",
    "get_restoration",
    "make_corruption",
    "method_names",
    "register",
    "register_restoration",
    "restoration_names",
]


class CorruptionFactory(Protocol):
    """``(cfg, codebook, bank_size=...) -> Corruption``: a method's training corruption."""

    def __call__(self, cfg: CorruptionConfig, codebook: Sequence[float] | None = None, *,
                 bank_size: int = 512) -> Corruption: ...


class InferenceInput(Protocol):
    """What restoration needs from a corruption: the network input at a given level."""

    def inference_input(
        self, x: torch.Tensor, level: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor: ...


#: ``(model, x, cfg, corruption, generator, channels_last) -> (anomaly_map, restored)``
RestoreFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _no_rules(cfg: RunConfig) -> list[str]:
    return []


@dataclass(frozen=True)
class Restoration:
    """A restoration procedure of detection: a value of ``inference.method``.

    Attributes:
        name: The ``inference.method`` value (``ensemble``, ``multistep``, ``walk``, ...).
        run: ``(model, x (B,1,H,W), cfg: InferenceConfig, corruption, generator,
            channels_last) -> (anomaly_map, restored)``, both ``(B, 1, H, W)`` float32.
        validate: Rules on the ``inference`` settings it reads: ``cfg -> [problems]``, each
            ``"inference.key must be ..., got ..."``.
    """

    name: str
    run: RestoreFn
    validate: Callable[[InferenceConfig], list[str]]


@dataclass(frozen=True)
class Method:
    """Everything that defines a method, training and detection.

    Attributes:
        name: The ``corruption.name`` value (recorded in every checkpoint).
        title: A short human name.
        publication: The citation of the method, or what it is when it is not published.
        sources: What its implementation was read from (papers, public code: facts only).
        make_corruption: Its training corruption, from the building blocks of
            :mod:`disyre.corruption`: ``(cfg.corruption, codebook, bank_size=) -> Corruption``.
        restorations: The ``inference.method`` values it can detect with (registered
            :class:`Restoration` names), the first being its own.
        inference: Its default inference settings (``method``, ``levels``, ``steps``).
        own_inference: Setting ``corruption.name`` to it always applies :attr:`inference`
            (the baselines, whose detection is part of the method); ``False``: only when the
            current ``inference.method`` is not one of :attr:`restorations`.
        target: What the network learns to output: ``clean`` (the clean patch) or ``noise``
            (the corruption's ``CorruptionResult.target``).
        loss: The training loss: ``mse`` (mean squared error) or ``l1`` (mean absolute
            error).
        loss_region: Where the loss applies: ``patch`` (every pixel of the patch) or ``box``
            (the pixels of the corruption's mask, ``CorruptionResult.mask``: ``pddpm``'s
            noised box). ``train.objective=shared`` trains any method with ``mse`` over the
            ``patch`` instead.
        whole_slices: Training draws whole slices padded as detection pads them (and a
            ``box`` region among the grid boxes holding brain) instead of patches: used
            where the run's ``sampler.whole_slices`` is ``null``.
        augment: Whether training augments the clean patches by default (its publication's
            recipe): used when the run's ``corruption.augment`` is ``null``; an explicit
            ``true``/``false`` there (every checkpoint saved before the switch existed
            records ``true``) overrides it.
        network: The network: ``preset`` (the run's ``model`` section).
        max_level: The largest level (99 on the level table of
            :mod:`disyre.corruption.schedule`; 999 for 1000-step diffusion schedules).
        inference_input: Detection feeds the network the corruption's ``inference_input``
            (noising) instead of the scan itself.
        anomaly_window: ``corruption.window`` is a synthetic anomaly's window (at least
            ``config.MIN_CORRUPTION_WINDOW``, at most the patch).
        foreground_weighting: Whether detection weights the windows' maps by their
            foreground fraction by default (DISYRE's step; the baselines' publications do
            not): used when the run's ``inference.foreground_weighting`` is ``null``. Its
            published map post-processing (erosion, median filter, connected components) is
            :data:`disyre.inference.postprocess.PUBLISHED` (``inference.postprocessing``).
        codebook: Its corruption uses the intensity codebook fitted to the training data
            (:func:`~disyre.corruption.bias.fit_codebook`).
        validate: Its own config rules: ``cfg -> [problems]``, each ``"section.key must be
            ..., got ..."``.
    """

    name: str
    title: str
    publication: str
    sources: tuple[str, ...]
    make_corruption: CorruptionFactory
    restorations: tuple[str, ...]
    inference: Mapping[str, Any]
    own_inference: bool = False
    target: Literal["clean", "noise"] = "clean"
    loss: Literal["mse", "l1"] = "mse"
    loss_region: Literal["patch", "box"] = "patch"
    whole_slices: bool = False
    augment: bool = True
    network: Literal["preset"] = "preset"
    max_level: int = 99
    inference_input: bool = False
    anomaly_window: bool = False
    foreground_weighting: bool = True
    codebook: bool = False
    validate: Callable[[RunConfig], list[str]] = field(default=_no_rules)

    def augments(self, cfg: CorruptionConfig) -> bool:
        """Whether training augments the clean patches of a run with corruption ``cfg``:
        ``cfg.augment`` when set, else the method's own :attr:`augment`.

        Example:
            >>> import disyre.methods
            >>> get_method("dae").augments(CorruptionConfig(name="dae"))
            False
            >>> get_method("dae").augments(CorruptionConfig(name="dae", augment=True))
            True
        """
        return self.augment if cfg.augment is None else bool(cfg.augment)

    def objective(self, cfg: RunConfig) -> tuple[str, str]:
        """``(loss, region)`` that training uses for a run with config ``cfg``: the method's
        own (``train.objective=published``) or ``("mse", "patch")`` (``shared``).

        Example:
            >>> import disyre.methods
            >>> rc = RunConfig()
            >>> get_method("pddpm").objective(rc)
            ('l1', 'box')
            >>> rc.train.objective = "shared"
            >>> get_method("pddpm").objective(rc)
            ('mse', 'patch')
        """
        if cfg.train.objective == "shared":
            return ("mse", "patch")
        return (self.loss, self.loss_region)

    def trains_on_whole_slices(self, cfg: RunConfig) -> bool:
        """Whether training draws whole slices: ``sampler.whole_slices`` when set, else
        :attr:`whole_slices`."""
        w = cfg.sampler.whole_slices
        return self.whole_slices if w is None else bool(w)

    def weights_foreground(self, cfg: InferenceConfig) -> bool:
        """Whether detection weights the maps by foreground with inference settings ``cfg``:
        ``cfg.foreground_weighting`` when set, else the method's own
        :attr:`foreground_weighting`.

        Example:
            >>> import disyre.methods
            >>> get_method("pddpm").weights_foreground(InferenceConfig()), get_method(
            ...     "dag").weights_foreground(InferenceConfig())
            (False, True)
        """
        if cfg.foreground_weighting is None:
            return self.foreground_weighting
        return bool(cfg.foreground_weighting)

    def resolved_inference(self, cfg: InferenceConfig) -> InferenceConfig:
        """A copy of ``cfg`` with the settings left to the method (``null``) resolved:
        what detection runs with.

        Example:
            >>> import disyre.methods
            >>> get_method("dae").resolved_inference(InferenceConfig()).foreground_weighting
            False
        """
        return dataclasses.replace(cfg, foreground_weighting=self.weights_foreground(cfg))

    def inference_recipe(self, current: Mapping[str, Any]) -> dict[str, Any]:
        """The ``inference`` fields that switching a config to this method sets, given the
        ``current`` inference section (a dict): see :attr:`own_inference`.

        Example:
            >>> import disyre.methods
            >>> get_method("dag").inference_recipe({"method": "ensemble"})
            {}
            >>> get_method("dag").inference_recipe({"method": "walk"})["method"]
            'ensemble'
        """
        if self.own_inference or current.get("method") not in self.restorations:
            return copy.deepcopy(dict(self.inference))
        return {}

    def run_config(self, base: RunConfig) -> RunConfig:
        """A copy of ``base`` that trains and detects with this method (its name and
        inference recipe).

        Example:
            >>> import disyre.methods
            >>> get_method("dae").run_config(RunConfig()).inference.levels
            [0]
        """
        rc = copy.deepcopy(base)
        rc.corruption.name = self.name
        for k, v in self.inference_recipe(dataclasses.asdict(rc.inference)).items():
            setattr(rc.inference, k, v)
        return rc


_METHODS: dict[str, Method] = {}
_RESTORATIONS: dict[str, Restoration] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (replacing one of the same name) and return it."""
    _METHODS[method.name] = method
    return method


def method_names() -> tuple[str, ...]:
    """The registered methods' names, in registration order."""
    return tuple(_METHODS)


def get_method(name: str) -> Method:
    """The registered method ``name``.

    Raises:
        ConfigError: No such method (one line naming the known ones).
    """
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown method {name!r}; choose from "
                          f"{', '.join(method_names())}") from None


def register_restoration(name: str, run: RestoreFn,
                         validate: Callable[[InferenceConfig], list[str]]) -> Restoration:
    """Add a restoration procedure (an ``inference.method`` value) and return it."""
    r = Restoration(name, run, validate)
    _RESTORATIONS[name] = r
    return r


def restoration_names() -> tuple[str, ...]:
    """The registered restoration procedures (valid ``inference.method`` values)."""
    return tuple(_RESTORATIONS)


def get_restoration(name: str) -> Restoration:
    """The registered restoration procedure ``name``.

    Raises:
        ConfigError: No such procedure.
    """
    if name not in _RESTORATIONS:
        raise ConfigError(f"inference.method must be one of {', '.join(_RESTORATIONS)}, "
                          f"got {name!r}")
    return _RESTORATIONS[name]


def make_corruption(cfg: CorruptionConfig, codebook: Sequence[float] | None = None, *,
                    bank_size: int = 512) -> Corruption:
    """The training corruption of the method ``cfg.name``.

    Args:
        cfg: Corruption config (``name`` a registered method, ``window``, ``codebook``,
            ``shapes``, ``bias_selection``).
        codebook: Fitted intensity codebook (from :func:`~disyre.corruption.bias.fit_codebook`);
            it overrides ``cfg.codebook``. With neither, the authors' codebook is used.
        bank_size: Foreign-patch bank of the texture anomalies; 0 makes the corruption
            stateless (textures from the other images of each batch), so that a batch depends
            on its generator only.

    Returns:
        A :class:`~disyre.corruption.base.Corruption`. Pre-corruption augmentation is not
        part of it (:meth:`Method.augments`).

    Example:
        >>> import disyre.methods
        >>> make_corruption(CorruptionConfig(name="gaussian")).name
        'gaussian'
    """
    return get_method(cfg.name).make_corruption(cfg, codebook, bank_size=bank_size)


def forward(model: nn.Module, x: torch.Tensor, level: torch.Tensor, precision: str,
            channels_last: bool) -> torch.Tensor:
    """One pass of the network ``model(x, level)`` under autocast, as float32."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, precision):
        out = model(x, level)
    return out.float().contiguous()


def steps_rule(f: InferenceConfig) -> list[str]:
    """``inference.steps`` in [1, 100]: the rule of the procedures that do not walk."""
    if 1 <= f.steps <= 100:
        return []
    return [f"inference.steps must be in [1, 100], got {f.steps!r}"]


class _Registry:
    """The registry as :mod:`disyre.config` sees it (:class:`disyre.config.MethodCatalog`)."""

    def problems(self, cfg: RunConfig) -> list[str]:
        c, f = cfg.corruption, cfg.inference
        if c.name not in _METHODS:
            return [f"corruption.name must be one of {', '.join(_METHODS)}, got {c.name!r}"]
        m = _METHODS[c.name]
        bad: list[str] = []
        if f.method not in _RESTORATIONS:
            bad.append(f"inference.method must be one of {', '.join(_RESTORATIONS)}, "
                       f"got {f.method!r}")
        elif f.method not in m.restorations:
            owners = [n for n, o in _METHODS.items() if f.method in o.restorations]
            if len(owners) == 1:
                bad.append(f"inference.method must be {f.method} only with "
                           f"corruption.name={owners[0]}, got 'corruption.name={c.name}'")
            if len(m.restorations) == 1:
                bad.append(f"inference.method must be {m.restorations[0]} for "
                           f"corruption.name={c.name}, got {f.method!r}")
            elif len(owners) != 1:
                bad.append(f"inference.method must be one of {', '.join(m.restorations)} "
                           f"for corruption.name={c.name}, got {f.method!r}")
        if not (len(f.levels) > 0 and all(0 <= k <= m.max_level for k in f.levels)):
            bad.append(f"inference.levels must be levels in [0, {m.max_level}], "
                       f"got {f.levels!r}")
        if f.method in _RESTORATIONS:
            bad += _RESTORATIONS[f.method].validate(f)
        return bad + m.validate(cfg)

    def inference_recipe(self, name: str, current: dict[str, Any]) -> dict[str, Any]:
        return _METHODS[name].inference_recipe(current) if name in _METHODS else {}


REGISTRY = _Registry()
_config.install_methods(REGISTRY)
