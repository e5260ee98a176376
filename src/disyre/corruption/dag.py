"""Synthetic anomalies: the disentangled anomaly generator (DAG) and its ablations.

Per patch (docs/method.md#synthetic-anomalies): a ``window`` x ``window`` window centred
on a random brain pixel; a shape ``m`` in it (zero on background); texture by foreign patch
interpolation with ``a_tex ~ U(0, 1)``; an intensity bias with ``a_bias ~ U(0, 1)``;
severity ``a = max(a_tex, max |x2 - x1|)`` and level ``schedule.level_of(a)``.

Variants:

- ``dag``: texture with the foreign patch rescaled to the target's range inside ``m``, then bias;
- ``fpi``: texture without rescaling, no bias (severity = ``a_tex``);
- ``bias``: bias only (severity = ``max |x2 - x|``).

Shape sizes (``shapes``: ``authors`` or ``legacy``) are those of
:func:`~disyre.corruption.shapes.random_shapes`; the level selection of the bias
(``bias_selection``: ``authors`` quantises the texture-blended window, ``single`` the clean
one) that of :func:`~disyre.corruption.bias.bias_field`.

The brain is the given mask (``brain=``, e.g. the cached brain mask carried through the patch
sampler and the augmentation), or else the non-zero pixels. A patch whose shape covers no
brain pixel (e.g. an empty patch) is returned unchanged with severity 0.

All work is done inside the windows (the anomaly never leaves its window), batched.

Example:
    >>> import torch
    >>> x = torch.zeros(3, 1, 96, 96); x[:, :, 10:90, 10:90] = 0.6
    >>> res = SyntheticAnomaly("dag")(x, torch.Generator().manual_seed(0), alpha=0.0)
    >>> bool(torch.equal(res.corrupted, x))
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from disyre.config import BIAS_SELECTIONS, MIN_CORRUPTION_WINDOW, SHAPE_RECIPES
from disyre.corruption import schedule
from disyre.corruption.base import CorruptionResult, check_patches
from disyre.corruption.bias import AUTHORS_CODEBOOK, apply_bias, bias_field
from disyre.corruption.shapes import (
    extract_windows,
    paste_windows,
    rand,
    random_shapes,
    sample_centres,
)
from disyre.corruption.texture import PatchBank, blend, donor_index, match_range


def _alpha(alpha: float | torch.Tensor | None, u: torch.Tensor) -> torch.Tensor:
    if alpha is None:
        return u
    a = torch.as_tensor(alpha, dtype=u.dtype, device=u.device).expand_as(u)
    if (a < 0).any() or (a > 1).any():
        raise ValueError("alpha must lie in [0, 1]")
    return a


class SyntheticAnomaly:
    """Batched synthetic-anomaly corruption (``dag``, ``fpi`` or ``bias``).

    Args:
        name: ``dag``, ``fpi`` or ``bias``.
        window: Side of the anomaly window (patches must be at least this large).
        codebook: Sorted intensity levels of the bias anomaly (default: the authors').
        bank_size: Capacity of the foreign-patch bank (0 = texture from the batch only).
            Once the bank holds a batch's worth of patches, foreign patches come from it
            (i.e. from earlier batches, mostly other subjects); each call then adds its own
            brain windows. Before that, and always with ``bank_size=0``, a foreign patch is a
            brain window of another image of the batch (of the same image if the batch has one).
        edge_blur_p: Probability of soft shape edges (0.7 in the method).
        shapes: Shape recipe, ``authors`` (default) or ``legacy``.
        bias_selection: Level selection of the bias, ``authors`` (default) or ``single``.

    Example:
        >>> import torch
        >>> x = torch.zeros(2, 1, 64, 64); x[:, :, 4:60, 4:60] = 0.5
        >>> res = SyntheticAnomaly("fpi")(x, torch.Generator().manual_seed(1))
        >>> bool(torch.allclose(res.severity, res.params["a_tex"]))
        True
    """

    def __init__(self, name: str = "dag", window: int = 64,
                 codebook: Sequence[float] | None = None, bank_size: int = 512,
                 edge_blur_p: float = 0.7, shapes: str = "authors",
                 bias_selection: str = "authors") -> None:
        if name not in ("dag", "fpi", "bias"):
            raise ValueError(f"unknown synthetic anomaly {name!r}; choose dag, fpi or bias")
        if shapes not in SHAPE_RECIPES:
            raise ValueError(f"unknown shape recipe {shapes!r}; choose from "
                             f"{list(SHAPE_RECIPES)}")
        if bias_selection not in BIAS_SELECTIONS:
            raise ValueError(f"unknown bias selection {bias_selection!r}; choose from "
                             f"{list(BIAS_SELECTIONS)}")
        if window < MIN_CORRUPTION_WINDOW:
            raise ValueError(f"anomaly window must be at least {MIN_CORRUPTION_WINDOW} pixels")
        cb = list(AUTHORS_CODEBOOK if codebook is None else codebook)
        if len(cb) < 1 or sorted(cb) != cb:
            raise ValueError(f"codebook must be a non-empty increasing list, got {cb}")
        self.name = name
        self.window = window
        self.codebook = torch.tensor(cb, dtype=torch.float32)
        self.edge_blur_p = edge_blur_p
        self.shapes = shapes
        self.bias_selection = bias_selection
        self.bank = PatchBank(bank_size) if bank_size > 0 else None
        self.texture = name in ("dag", "fpi")
        self.bias = name in ("dag", "bias")

    def __repr__(self) -> str:
        return (f"SyntheticAnomaly({self.name!r}, window={self.window}, shapes={self.shapes!r}, "
                f"bias_selection={self.bias_selection!r})")

    def _foreign(self, x: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Foreign windows and, per sample, the batch index they come from (-1: the bank)."""
        b, S = x.shape[0], self.window
        own = extract_windows(x, top, left, S)
        donors = donor_index(b, generator, x.device)
        use_bank = self.bank is not None and len(self.bank) >= b
        f = self.bank.sample(b, generator, x.device) if use_bank else own[donors]
        if self.bank is not None:
            self.bank.add(own)
        return f, torch.full_like(donors, -1) if use_bank else donors

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 alpha: float | torch.Tensor | None = None,
                 alpha_bias: float | torch.Tensor | None = None, *,
                 brain: torch.Tensor | None = None) -> CorruptionResult:
        """Corrupt clean patches.

        Args:
            x: (B, 1, H, W) clean patches in [0, 1], background 0, ``H, W >= window``.
            generator: Source of all randomness (CPU or the data's device).
            alpha: Fix ``a_tex`` and ``a_bias`` (scalar or (B,)) instead of drawing them
                from U(0, 1), e.g. to show increasing severities; the bias sign stays random.
            alpha_bias: Fix ``a_bias`` alone (default: ``alpha``).
            brain: (B, 1, H, W) brain mask of the patches (default: ``x > 0``).

        Returns:
            The :class:`CorruptionResult`; ``params`` holds ``a_tex``, ``a_bias``, ``sign``,
            ``top``, ``left``, ``donor`` (the batch index of the texture's image, -1 when it
            came from the bank or there is no texture) with ``donor_top`` and ``donor_left``
            (its window), ``family`` (index into the recipe's shape families) and
            ``edge_sigma``.
        """
        check_patches(x)
        dev, S, B = x.device, self.window, x.shape[0]
        if brain is None:
            brain = x > 0
        else:
            if brain.shape != x.shape:
                raise ValueError(f"brain mask of shape {tuple(brain.shape)} for patches of "
                                 f"shape {tuple(x.shape)}")
            brain = brain.to(dev).bool()
        tops, lefts = sample_centres(brain, S, generator, draws=2)  # anomaly, donor windows
        top, left = tops[0], lefts[0]
        xw = extract_windows(x, top, left, S)
        bw = extract_windows(brain, top, left, S).to(x.dtype)
        m, info = random_shapes(B, S, generator, dev, recipe=self.shapes,
                                edge_blur_p=self.edge_blur_p, with_info=True)
        m = m * bw
        u = rand((B, 3), generator, dev)
        a_tex = _alpha(alpha, u[:, 0]) if self.texture else torch.zeros(B, device=dev)
        alpha_bias = alpha if alpha_bias is None else alpha_bias
        a_bias = _alpha(alpha_bias, u[:, 1]) if self.bias else torch.zeros(B, device=dev)
        sign = torch.where(u[:, 2] < 0.5, -1.0, 1.0).to(dev)

        x1 = xw
        donor = torch.full((B,), -1, dtype=torch.long, device=dev)
        if self.texture:
            f, donor = self._foreign(x, tops[1], lefts[1], generator)
            if self.name == "dag":
                f = match_range(f, xw, m)
            x1 = blend(xw, f, m, a_tex)
        wmask = m
        x2 = x1
        if self.bias:
            quantised = x1 if self.bias_selection == "authors" else xw
            b = bias_field(quantised, m, self.codebook.to(dev), generator, self.bias_selection)
            x2 = apply_bias(x1, b, a_bias, sign, bw)
            wmask = torch.maximum(m, b * bw)
        change = (x2 - x1).abs().flatten(1).amax(1)
        # a window without brain under the shape gets no anomaly: severity 0, not a_tex
        placed = m.flatten(1).amax(1) > 0
        severity = torch.maximum(torch.where(placed, a_tex, 0.0), change)
        corrupted = paste_windows(x, x2, top, left)
        mask = paste_windows(torch.zeros_like(x), wmask, top, left, inplace=True)
        return CorruptionResult(
            corrupted=corrupted, clean=x, mask=mask, severity=severity,
            level=schedule.level_of(severity),
            params=dict(a_tex=a_tex, a_bias=a_bias, sign=sign, top=top, left=left,
                        donor=donor, donor_top=tops[1][donor.clamp_min(0)],
                        donor_left=lefts[1][donor.clamp_min(0)], family=info["family"],
                        edge_sigma=info["edge_sigma"]),
        )

    def inference_input(self, x: torch.Tensor, level: torch.Tensor | int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """Synthetic anomalies add nothing at test time: returns ``x`` unchanged."""
        return x
