"""The diffusion baselines' forward processes: AnoDDPM (``anoddpm``) and the patched DDPM
(``pddpm``), both with simplex noise on a 1000-step DDPM schedule.

Both work in the [-1, 1] range of their publications (``2 x - 1`` for images in [0, 1]) and
condition the network on the diffusion step ``t`` in ``[0, T - 1]`` (the ``level`` of a
:class:`~disyre.corruption.base.CorruptionResult`); the simplex noise is
:func:`~disyre.corruption.simplex.simplex_octaves`.

- :class:`SimplexDiffusion` (``anoddpm``, Wyatt et al. 2022): linear schedule (beta 1e-4 to
  0.02), ``t ~ U{0, ..., 799}`` in training, ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps``
  over the whole patch; the network predicts the noise ``eps`` (``target``). At test time
  the scan is noised to one step and walked back
  (:func:`disyre.methods.anoddpm.restore_walk`).
- :class:`PatchedDiffusion` (``pddpm``, Behrendt et al. 2023): cosine schedule,
  ``t ~ U{0, ..., 999}``; only one box of the :data:`BOX`-pixel grid is noised, the rest of
  the patch stays clean as context; the network predicts the clean patch. At test time each
  box in turn is noised and predicted in one step, and the boxes are stitched
  (:func:`disyre.methods.pddpm.restore_patched`).

docs/methods.md lists their published recipes and every difference.

Example:
    >>> import torch
    >>> x = torch.zeros(2, 1, 64, 64); x[:, :, 8:56, 8:56] = 0.5
    >>> res = SimplexDiffusion()(x, torch.Generator().manual_seed(0))
    >>> bool((res.level < 800).all()), tuple(res.target.shape)
    (True, (2, 1, 64, 64))
"""

from __future__ import annotations

import math

import torch

from disyre.corruption.base import CorruptionResult, check_patches
from disyre.corruption.shapes import rand
from disyre.corruption.simplex import simplex_octaves

#: diffusion steps of both baselines
T: int = 1000
#: AnoDDPM trains on steps below this (its ``sample_distance``)
ANODDPM_TRAIN_STEPS: int = 800
#: default side in pixels of the pDDPM boxes (``corruption.window``; the default 32 is half
#: the 64 px training patch: its 2 x 2 grid, as the publication's 48 px boxes on 96 px slices)
BOX: int = 32


def linear_alphas_bar(t: int = T, beta_start: float = 1e-4, beta_end: float = 0.02
                      ) -> torch.Tensor:
    """``abar_t = prod_{s <= t} (1 - beta_s)`` of the linear schedule (float64, ``(T,)``)."""
    betas = torch.linspace(beta_start, beta_end, t, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


def cosine_alphas_bar(t: int = T, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """``abar_t`` of the cosine schedule (Nichol and Dhariwal 2021), betas capped at
    ``max_beta`` (float64, ``(T,)``)."""
    steps = torch.arange(t + 1, dtype=torch.float64) / t
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1.0 - betas, 0)


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the range the diffusion baselines noise in."""
    return 2 * x - 1


def from_signed(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]."""
    return (x + 1) / 2


class _Diffusion:
    """Shared forward process: a schedule, simplex noise, the [-1, 1] range."""

    name = ""
    schedule = ""

    def __init__(self, lattice: str = "opensimplex") -> None:
        ab = linear_alphas_bar() if self.schedule == "linear" else cosine_alphas_bar()
        #: ``abar_t`` for ``t`` in ``[0, T - 1]`` (float64)
        self.alphas_bar = ab
        #: the simplex noise's lattice (``corruption.simplex``; :func:`simplex_octaves`)
        self.lattice = lattice

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def abar(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """``abar_t`` as a ``(B, 1, 1, 1)`` tensor of ``like``'s dtype and device."""
        t = torch.as_tensor(t, device=self.alphas_bar.device).long().reshape(-1)
        if (t < 0).any() or (t >= T).any():
            raise ValueError(f"diffusion steps must lie in [0, {T - 1}]")
        return self.alphas_bar[t].to(device=like.device, dtype=like.dtype).reshape(-1, 1, 1, 1)

    def noise(self, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Simplex noise of ``like``'s shape (each sample its own)."""
        return simplex_octaves(tuple(like.shape), generator, like.device,
                               lattice=self.lattice).to(like.dtype)

    def q_sample(self, xs: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor
                 ) -> torch.Tensor:
        """``sqrt(abar_t) xs + sqrt(1 - abar_t) eps`` for signed images ``xs``."""
        a = self.abar(t, xs).expand(xs.shape[0], 1, 1, 1)
        return a.sqrt() * xs + (1 - a).sqrt() * eps

    def _steps(self, b: int, high: int, generator: torch.Generator, device: torch.device,
               alpha: float | torch.Tensor | None) -> torch.Tensor:
        if alpha is None:
            u = rand((b,), generator, device)
            return (u * high).floor().long().clamp(max=high - 1)
        a = torch.as_tensor(alpha, dtype=torch.float32, device=device).expand(b)
        if (a < 0).any() or (a > 1).any():
            raise ValueError("alpha must lie in [0, 1]")
        return (a * (T - 1)).round().long()


class SimplexDiffusion(_Diffusion):
    """AnoDDPM's forward process (variant ``anoddpm``): the network predicts the noise."""

    name = "anoddpm"
    schedule = "linear"

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 alpha: float | torch.Tensor | None = None, *,
                 brain: torch.Tensor | None = None) -> CorruptionResult:
        """Noise each patch at a random step below :data:`ANODDPM_TRAIN_STEPS`.

        Args:
            x: (B, 1, H, W) clean patches in [0, 1].
            generator: Source of randomness.
            alpha: Fix the step as a fraction of ``T - 1`` (scalar or (B,)).
            brain: Accepted for the common interface; the whole patch is noised.

        Returns:
            The :class:`CorruptionResult`: ``corrupted`` the signed noised patch, ``target``
            the simplex noise, ``level`` the step, ``severity`` ``sqrt(1 - abar_t)``.
        """
        check_patches(x)
        t = self._steps(x.shape[0], ANODDPM_TRAIN_STEPS, generator, x.device, alpha)
        eps = self.noise(x, generator)
        xt = self.q_sample(to_signed(x), t, eps)
        sev = (1 - self.abar(t, x)).sqrt().reshape(-1)
        return CorruptionResult(corrupted=xt, clean=x, mask=torch.ones_like(x), severity=sev,
                                level=t, params={}, target=eps)

    def inference_input(self, x: torch.Tensor, level: torch.Tensor | int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` (in [0, 1]) signed and noised to step ``level`` in one shot."""
        if generator is None:
            raise ValueError("anoddpm needs a generator to noise its input")
        xs = to_signed(x)
        return self.q_sample(xs, level, self.noise(xs, generator))

    def x0_from_eps(self, xt: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
        """The signed clean image implied by the predicted noise, clipped to [-1, 1]."""
        a = float(self.alphas_bar[t])
        return ((xt - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1, 1)

    def step(self, x0: torch.Tensor, xt: torch.Tensor, t: int, prev: int,
             generator: torch.Generator) -> torch.Tensor:
        """One ancestral step from ``t`` to ``prev < t`` (``-1``: to the clean image).

        The posterior ``q(x_prev | x_t, x0)`` of the chain respaced to the steps walked (the
        full walk when ``prev = t - 1``): mean
        ``beta' sqrt(abar_prev) / (1 - abar_t) x0 + (1 - abar_prev) sqrt(abar_t / abar_prev)
        / (1 - abar_t) x_t`` with ``beta' = 1 - abar_t / abar_prev``, plus simplex noise of
        variance ``beta'`` (the fixed "large" variance); no noise on the last step.
        """
        a_t = float(self.alphas_bar[t])
        a_p = float(self.alphas_bar[prev]) if prev >= 0 else 1.0
        beta = 1 - a_t / a_p
        mean = (beta * math.sqrt(a_p) / (1 - a_t)) * x0 \
            + ((1 - a_p) * math.sqrt(a_t / a_p) / (1 - a_t)) * xt
        if prev < 0:
            return mean
        return mean + math.sqrt(beta) * self.noise(xt, generator)


class PatchedDiffusion(_Diffusion):
    """The patched DDPM's forward process (variant ``pddpm``): one box noised, the network
    predicts the clean patch."""

    name = "pddpm"
    schedule = "cosine"

    def __init__(self, box: int = BOX, on_brain: bool = False,
                 lattice: str = "opensimplex") -> None:
        super().__init__(lattice)
        if box < 1:
            raise ValueError(f"box must be >= 1, got {box}")
        self.box = int(box)
        #: draw the noised box among the grid boxes holding brain (detection runs those
        #: only); ``False``: among every grid box of the patch
        self.on_brain = bool(on_brain)

    def __repr__(self) -> str:
        return f"PatchedDiffusion(box={self.box})"

    def boxes(self, h: int, w: int) -> list[tuple[int, int]]:
        """Top-left corners of the grid of boxes covering ``h x w`` (the last ones may be cut)."""
        return [(y, x) for y in range(0, h, self.box) for x in range(0, w, self.box)]

    def noise_box(self, x: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor,
                  corner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Signed ``x`` with the box at ``corner`` ((B, 2) top-left) noised to step ``t``.

        Returns:
            ``(network input, box mask)``, both ``(B, 1, H, W)``.
        """
        h, w = x.shape[-2:]
        ys = torch.arange(h, device=x.device)[None, :, None]
        xs = torch.arange(w, device=x.device)[None, None, :]
        cy, cx = corner[:, 0, None, None], corner[:, 1, None, None]
        box = ((ys >= cy) & (ys < cy + self.box) & (xs >= cx) & (xs < cx + self.box))
        box = box.unsqueeze(1).to(x.dtype)
        signed = to_signed(x)
        return box * self.q_sample(signed, t, eps) + (1 - box) * signed, box

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 alpha: float | torch.Tensor | None = None, *,
                 brain: torch.Tensor | None = None) -> CorruptionResult:
        """Noise one random box of the grid of each patch at a random step.

        Args:
            x: (B, 1, H, W) clean patches in [0, 1].
            generator: Source of randomness.
            alpha: Fix the step as a fraction of ``T - 1`` (scalar or (B,)).
            brain: The patches' brain mask (``on_brain``; default the non-zero pixels).

        Returns:
            The :class:`CorruptionResult`: ``corrupted`` the signed patch with one box noised,
            ``mask`` that box, ``level`` the step, ``severity`` ``sqrt(1 - abar_t)``.
        """
        check_patches(x)
        b, _, h, w = x.shape
        t = self._steps(b, T, generator, x.device, alpha)
        grid = torch.as_tensor(self.boxes(h, w), device=x.device)
        if self.on_brain:
            fg = (x > 0) if brain is None else brain.bool()
            k = self.box
            has = torch.stack([fg[:, 0, y0:y0 + k, x0:x0 + k].flatten(1).any(1)
                               for y0, x0 in self.boxes(h, w)], 1)  # (B, n_boxes)
            score = rand((b, len(grid)), generator, x.device) + has.float()
            pick = score.argmax(1)  # uniform among the boxes with brain
        else:
            pick = (rand((b,), generator, x.device) * len(grid)).long().clamp(max=len(grid) - 1)
        eps = self.noise(x, generator)
        xt, box = self.noise_box(x, t, eps, grid[pick])
        sev = (1 - self.abar(t, x)).sqrt().reshape(-1)
        return CorruptionResult(corrupted=xt, clean=x, mask=box, severity=sev, level=t,
                                params={"corner": grid[pick]})

    def inference_input(self, x: torch.Tensor, level: torch.Tensor | int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """The signed scan (boxes are noised by the patched restoration itself)."""
        return to_signed(x)
