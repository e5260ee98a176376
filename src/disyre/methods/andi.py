"""ANDi (``andi``, Frotscher et al., aggregated normative diffusion, arXiv 2312.01904): a DDPM
that predicts its noise, trained with pyramidal noise; detection scores, at each step of an
interval, the distance between the forward posterior mean and the network's predicted mean,
and aggregates the steps by their geometric mean (``normative``); no reverse walk
(docs/methods.md).

Everything of the method is here: the pyramidal noise, the forward process (the linear
schedule of :mod:`disyre.corruption.diffusion`), the scoring and the registration.

Example:
    >>> x = torch.zeros(2, 1, 32, 32); x[:, :, 4:28, 4:28] = 0.5
    >>> res = AndiDiffusion()(x, torch.Generator().manual_seed(0))
    >>> bool((res.level >= 1).all()), tuple(res.target.shape)
    (True, (2, 1, 32, 32))
    >>> score_steps(75, 199, 125)[:3], score_steps(75, 199, 5)
    ([75, 76, 77], [75, 106, 137, 168, 199])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from disyre.config import ConfigError, CorruptionConfig, InferenceConfig
from disyre.corruption.base import Corruption, CorruptionResult, check_patches
from disyre.corruption.diffusion import T, from_signed, linear_alphas_bar, to_signed
from disyre.corruption.shapes import rand, randn
from disyre.methods.base import InferenceInput, Method, forward, register, register_restoration

PUBLICATION = ("A. Frotscher et al., Unsupervised anomaly detection using aggregated normative "
               "diffusion, arXiv:2312.01904")

#: the pyramid's discount: level ``i`` is weighted ``DISCOUNT ** i`` (``conf/train.yml``)
DISCOUNT: float = 0.8
#: at most this many levels in the pyramid (it stops earlier at 1 pixel)
PYRAMID_LEVELS: int = 10
#: the scored interval of diffusion steps, both ends included (``conf/eval.yml``
#: ``start: 75``, ``stop: 200``: the steps 75, ..., 199)
SCORE_FIRST: int = 75
SCORE_LAST: int = 199

NoiseKind = Literal["pyramid", "gaussian"]


def pyramid_noise(shape: tuple[int, ...], generator: torch.Generator,
                  device: torch.device | str | None = None, discount: float = DISCOUNT
                  ) -> torch.Tensor:
    """Pyramidal (multi-resolution) Gaussian noise of ``shape`` ``(B, C, H, W)``.

    White noise at full resolution plus, for ``i = 0, 1, ...`` (at most
    :data:`PYRAMID_LEVELS`), white noise drawn on a grid shrunk by ``r ** i`` from the
    previous level's (``r`` uniform in [2, 4), drawn anew per level), upsampled bilinearly to
    ``H x W`` and weighted ``discount ** i``; it stops after the first level that is one pixel
    wide. The sum is divided by its standard deviation over the whole batch (unit variance).

    Args:
        shape: ``(B, C, H, W)``.
        generator: Source of randomness (the levels' factors and the noise).
        device: Device of the result (default: the generator's).
        discount: Weight ratio between consecutive levels (0: white noise).

    Returns:
        float32 noise of ``shape``.
    """
    b, c, h, w = shape
    noise = randn((b, c, h, w), generator, device)
    hh, ww = h, w
    for i in range(PYRAMID_LEVELS):
        r = 2 + 2 * float(rand((1,), generator))
        hh, ww = max(1, int(hh / r ** i)), max(1, int(ww / r ** i))
        level = randn((b, c, hh, ww), generator, device)
        noise = noise + F.interpolate(level, size=(h, w), mode="bilinear",
                                      align_corners=False) * discount ** i
        if hh == 1 or ww == 1:
            break
    return noise / noise.std()


class AndiDiffusion:
    """ANDi's forward process: the linear DDPM schedule (beta 1e-4 to 0.02, T = 1000) in the
    [-1, 1] range, ``t ~ U{1, ..., 999}``, the network predicts the noise (``target``).

    Args:
        noise: Training noise: ``pyramid`` (published training) or ``gaussian``.
        score_noise: Noise of the scoring (published evaluation: ``gaussian``).
        discount: The pyramid's discount.
    """

    name = "andi"

    def __init__(self, noise: NoiseKind = "pyramid", score_noise: NoiseKind = "gaussian",
                 discount: float = DISCOUNT) -> None:
        for what, v in (("noise", noise), ("score_noise", score_noise)):
            if v not in ("pyramid", "gaussian"):
                raise ValueError(f"{what} must be pyramid or gaussian, got {v!r}")
        self.noise_kind, self.score_noise_kind, self.discount = noise, score_noise, discount
        #: ``abar_t`` for ``t`` in ``[0, T - 1]`` (float64)
        self.alphas_bar = linear_alphas_bar()
        prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_bar[:-1]])
        #: ``beta_t = 1 - abar_t / abar_{t-1}`` (the schedule's betas, float64)
        self.betas = 1 - self.alphas_bar / prev

    def __repr__(self) -> str:
        return (f"AndiDiffusion(noise={self.noise_kind!r}, score_noise="
                f"{self.score_noise_kind!r}, discount={self.discount})")

    def noise(self, like: torch.Tensor, generator: torch.Generator,
              kind: NoiseKind | None = None) -> torch.Tensor:
        """Noise of ``like``'s shape: ``kind`` (default: the training noise)."""
        kind = kind or self.noise_kind
        if kind == "pyramid":
            n = pyramid_noise(tuple(like.shape), generator, like.device, self.discount)
        else:
            n = randn(tuple(like.shape), generator, like.device)
        return n.to(like.dtype)

    def q_sample(self, xs: torch.Tensor, t: int | torch.Tensor, eps: torch.Tensor
                 ) -> torch.Tensor:
        """``sqrt(abar_t) xs + sqrt(1 - abar_t) eps`` for signed images ``xs``."""
        t = torch.as_tensor(t).long().reshape(-1)
        a = self.alphas_bar[t].to(xs.device, xs.dtype).reshape(-1, 1, 1, 1)
        return a.sqrt() * xs + (1 - a).sqrt() * eps

    def mean_from_noise(self, xt: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
        """The mean of ``x_{t-1}`` given ``x_t`` and a noise ``eps`` (true: the posterior mean
        of ``q(x_{t-1} | x_t, x_0)``; predicted: the network's ``p(x_{t-1} | x_t)``):
        ``(x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(1 - beta_t)``."""
        b, a = float(self.betas[t]), float(self.alphas_bar[t])
        return (xt - (b / math.sqrt(1 - a)) * eps) / math.sqrt(1 - b)

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 alpha: float | torch.Tensor | None = None, *,
                 brain: torch.Tensor | None = None) -> CorruptionResult:
        """Noise each patch at a random step in ``[1, T - 1]``.

        Args:
            x: (B, 1, H, W) clean patches in [0, 1].
            generator: Source of randomness.
            alpha: Fix the step as a fraction of ``T - 1`` (scalar or (B,)).
            brain: Accepted for the common interface; the whole patch is noised.

        Returns:
            The :class:`CorruptionResult`: ``corrupted`` the signed noised patch, ``target``
            the noise, ``level`` the step, ``severity`` ``sqrt(1 - abar_t)``.
        """
        check_patches(x)
        b = x.shape[0]
        if alpha is None:
            u = rand((b,), generator, x.device)
            t = (1 + (u * (T - 1)).floor().long()).clamp(max=T - 1)
        else:
            a = torch.as_tensor(alpha, dtype=torch.float32, device=x.device).expand(b)
            if (a < 0).any() or (a > 1).any():
                raise ValueError("alpha must lie in [0, 1]")
            t = (a * (T - 1)).round().long()
        eps = self.noise(x, generator)
        xt = self.q_sample(to_signed(x), t, eps)
        sev = (1 - self.alphas_bar[t.cpu()]).sqrt().to(x.device, x.dtype)
        return CorruptionResult(corrupted=xt, clean=x, mask=torch.ones_like(x), severity=sev,
                                level=t, params={}, target=eps)

    def inference_input(self, x: torch.Tensor, level: torch.Tensor | int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` (in [0, 1]) signed and noised to step ``level`` with the scoring noise."""
        if generator is None:
            raise ValueError("andi needs a generator to noise its input")
        xs = to_signed(x)
        return self.q_sample(xs, level, self.noise(xs, generator, self.score_noise_kind))


def score_steps(first: int, last: int, steps: int) -> list[int]:
    """The diffusion steps scored: ``steps`` evenly spaced steps from ``first`` to ``last``
    (``last - first + 1``: every step, as published).

    Example:
        >>> len(score_steps(75, 199, 125)), score_steps(75, 199, 1)
        (125, [75])
    """
    if not 1 <= steps <= last - first + 1:
        raise ConfigError(f"inference.steps must lie in [1, {last - first + 1}] for the steps "
                          f"{first} to {last}, got {steps}")
    if steps == 1:
        return [first]
    return sorted({round(v) for v in torch.linspace(first, last, steps).tolist()})


def geometric_mean(devs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The geometric mean of per-step deviation maps, ``exp(mean(log d_t))`` (a step with a
    zero deviation gives a zero)."""
    return torch.exp(torch.stack([torch.log(d) for d in devs]).mean(0))


def normative_scores(
    model: nn.Module,
    x: torch.Tensor,
    steps: Sequence[int],
    corruption: AndiDiffusion,
    generator: torch.Generator | None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ANDi's map: the geometric mean over ``steps`` of the squared distance, per pixel,
    between the posterior mean and the network's predicted mean.

    For each step ``t`` the scan is noised to ``x_t`` with fresh noise ``eps`` (the scoring
    noise, independent per step); the network predicts ``eps_hat`` from ``(x_t, t)``; the
    deviation is ``d_t = (mu(x_t, eps) - mu(x_t, eps_hat)) ** 2``
    (:meth:`AndiDiffusion.mean_from_noise`; ``mu(x_t, eps)`` is the mean of
    ``q(x_{t-1} | x_t, x_0)``). The map is the geometric mean of the ``d_t``. The restored
    image is the mean over the steps of the clean image implied by ``eps_hat`` (clipped), a
    by-product: the map does not use it.

    Args:
        model: Noise-predicting network ``forward(x_t, t)``.
        x: Images ``(B, 1, H, W)`` in [0, 1].
        steps: The diffusion steps scored (:func:`score_steps`).
        corruption: The ``andi`` forward process.
        generator: Randomness of the noise (required).
        precision: Autocast precision of the forward passes.
        channels_last: Feed the network channels-last tensors.

    Returns:
        ``(anomaly_map, restored)``, both ``(B, 1, H, W)`` float32.
    """
    if generator is None:
        raise ValueError("the normative scoring needs a generator for its noise")
    xs = to_signed(x)
    b = x.shape[0]
    logs = torch.zeros_like(x)
    x0 = torch.zeros_like(x)
    for t in steps:
        eps = corruption.noise(xs, generator, corruption.score_noise_kind)
        xt = corruption.q_sample(xs, t, eps)
        lt = torch.full((b,), int(t), dtype=torch.long, device=x.device)
        eps_hat = forward(model, xt, lt, precision, channels_last)
        d = (corruption.mean_from_noise(xt, t, eps) - corruption.mean_from_noise(xt, t, eps_hat)
             ) ** 2
        logs += torch.log(d)
        a = float(corruption.alphas_bar[t])
        x0 += ((xt - math.sqrt(1 - a) * eps_hat) / math.sqrt(a)).clamp(-1, 1)
    amap = torch.exp(logs / len(steps))
    return amap, from_signed(x0 / len(steps)).clamp(0, 1)


def _normative(model: nn.Module, x: torch.Tensor, cfg: InferenceConfig,
               corruption: InferenceInput | None, generator: torch.Generator | None,
               channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(corruption, AndiDiffusion):
        raise ConfigError("inference.method=normative needs the andi corruption")
    steps = score_steps(cfg.levels[0], cfg.levels[1], cfg.steps)
    return normative_scores(model, x, steps, corruption, generator, cfg.precision,
                            channels_last)


def interval_rule(f: InferenceConfig) -> list[str]:
    """Two levels, the first and last step scored, and at most one pass per step."""
    if len(f.levels) != 2 or not 1 <= f.levels[0] <= f.levels[1]:
        return ["inference.levels must be [first, last] steps with 1 <= first <= last for "
                f"method=normative, got {f.levels!r}"]
    n = f.levels[1] - f.levels[0] + 1
    if not 1 <= f.steps <= n:
        return [f"inference.steps must be in [1, {n}] (steps scored from {f.levels[0]} to "
                f"{f.levels[1]}), got {f.steps!r}"]
    return []


def andi_diffusion(cfg: CorruptionConfig, codebook: Sequence[float] | None = None, *,
                   bank_size: int = 512) -> Corruption:
    """ANDi's forward process with its published noises (:class:`AndiDiffusion`)."""
    return AndiDiffusion()


register_restoration("normative", _normative, interval_rule)

#: ANDi scores every step from 75 to 199 (125 network passes per window)
ANDI = register(Method(
    name="andi",
    title="ANDi (pyramid DDPM, aggregated normative diffusion)",
    publication=PUBLICATION,
    sources=(PUBLICATION, "the authors' public code (conf/train.yml, conf/eval.yml, "
             "diffusion.py, utils.py; facts only)"),
    make_corruption=andi_diffusion,
    restorations=("normative",),
    inference={"method": "normative", "levels": [SCORE_FIRST, SCORE_LAST],
               "steps": SCORE_LAST - SCORE_FIRST + 1},
    own_inference=True,
    target="noise",
    # the authors' code augments nothing and weights no map by foreground
    augment=False,
    foreground_weighting=False,
    max_level=999,
    inference_input=True,
))
