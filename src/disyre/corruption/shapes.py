"""Batched anomaly shapes: window placement, rectangles, discs, organic blobs, soft edges.

Two recipes (``CorruptionConfig.shapes``):

- ``authors`` (default): the authors' size distribution (docs/method.md#synthetic-anomalies,
  the shapes), for a window of side ``S`` (all sizes scale with ``S / 64``): rectangles with
  sides drawn from 10-44 px at a random offset in the window, rotated by up to +-15 degrees
  about the window centre half of the time; discs 10-44 px wide at a random offset at least
  10 px from the window border; organic blobs (procedural, no asset files) whose areas match
  those of the authors' stored shapes after their 1-2x zoom and centre crop (quartiles about
  1,500 / 2,300 / 3,050 px of the 4,096 px window, about 70 % touching the window's edge).
  Edges are blurred with probability 0.7 by an integer sigma drawn from 0-4 px (0 = no blur,
  so 56 % of the shapes are soft), with reflecting borders and the kernel truncated at
  4 sigma;
- ``legacy``: smaller shapes always centred in the window (sides 0.12-0.75 of the window,
  ellipses, star-shaped blobs of radius 0.1-0.25 of the window) and a soft edge of sigma
  U(0, 5) with probability 0.7.

Everything here is vectorised over the batch (no Python loop over samples) and draws its
randomness from an explicit ``torch.Generator``. Random numbers are drawn on the generator's
device and moved to the data's device, so a CPU generator also drives CUDA data.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> m = random_shapes(4, 64, g)
    >>> tuple(m.shape), bool(((m >= 0) & (m <= 1)).all())
    ((4, 1, 64, 64), True)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from disyre.config import SHAPE_RECIPES

#: shape families of the ``authors`` recipe, drawn with equal weight
FAMILIES: tuple[str, ...] = ("rectangle", "disc", "organic")
#: shape families of the ``legacy`` recipe
LEGACY_FAMILIES: tuple[str, ...] = ("rectangle", "ellipse", "blob")
#: largest soft-edge blur sigma (pixels) of the legacy recipe; sigma ~ U(0, MAX_EDGE_SIGMA)
MAX_EDGE_SIGMA: float = 5.0
#: probability that a shape's edge is softened (both recipes)
EDGE_BLUR_P: float = 0.7
#: the authors' recipe draws an integer edge sigma in 0..AUTHORS_MAX_SIGMA (px at a 64 px window)
AUTHORS_MAX_SIGMA: int = 4
#: the window side the authors' pixel sizes refer to
AUTHORS_WINDOW: int = 64
_BLOB_HARMONICS: int = 5
# organic blobs of the authors' recipe (px at a 64 px window): base radius U(12, 25), zoom
# U(1, 2), centre offset up to 7 px (times the zoom), harmonic amplitudes summing to 0.5.
# Chosen so that the clipped areas match the authors' stored shapes (see random_shapes).
_ORGANIC_RADIUS: tuple[float, float] = (12.0, 25.0)
_ORGANIC_OFFSET: float = 7.0
_ORGANIC_AMPLITUDE: float = 0.5


def rand(shape: tuple[int, ...], generator: torch.Generator,
         device: torch.device | str | None = None) -> torch.Tensor:
    """``U(0, 1)`` numbers drawn with ``generator`` (on its device), moved to ``device``."""
    r = torch.rand(shape, generator=generator, device=generator.device)
    return r if device is None else r.to(device)


def randn(shape: tuple[int, ...], generator: torch.Generator,
          device: torch.device | str | None = None) -> torch.Tensor:
    """Standard normal numbers drawn with ``generator``, moved to ``device``."""
    r = torch.randn(shape, generator=generator, device=generator.device)
    return r if device is None else r.to(device)


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised 1D Gaussian kernels, one per sigma.

    Args:
        sigma: (B,) standard deviations in pixels; values near 0 give a unit impulse.
        radius: Half-width; kernels have ``2 * radius + 1`` taps.

    Returns:
        (B, 2 * radius + 1) kernels summing to 1.
    """
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    s = sigma.float().clamp_min(1e-2)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def _reflect_index(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Map indices onto ``[0, n)`` by half-sample symmetric reflection (scipy's ``reflect``)."""
    m = idx.remainder(2 * n)
    return torch.where(m >= n, 2 * n - 1 - m, m)


def _blur_matrix(kernels: torch.Tensor, n: int, padding: str = "zeros") -> torch.Tensor:
    """(B, n, n) matrices applying (B, 2r+1) ``kernels`` with zero or reflecting borders."""
    radius = (kernels.shape[1] - 1) // 2
    t = torch.arange(n, device=kernels.device)
    if padding == "reflect":
        taps = torch.arange(-radius, radius + 1, device=kernels.device)
        src = _reflect_index(t[:, None] + taps[None, :], n)  # (n, 2r+1) source column
        b = kernels.shape[0]
        out = torch.zeros(b, n, n, dtype=kernels.dtype, device=kernels.device)
        return out.scatter_add_(2, src[None].expand(b, -1, -1).contiguous(),
                                kernels[:, None, :].expand(b, n, -1).contiguous())
    d = t[None, :] - t[:, None]  # column minus row: the tap used at (row, col)
    band = d.abs() <= radius
    idx = (d + radius).clamp(0, 2 * radius).flatten()
    return kernels[:, idx].view(-1, n, n) * band


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor | float, max_sigma: float | None = None,
                  *, padding: str = "zeros", truncate: float = 3.0) -> torch.Tensor:
    """Separable Gaussian blur of each sample with its own sigma.

    Args:
        x: (B, 1, H, W) images.
        sigma: (B,) per-sample sigmas, or one float for all.
        max_sigma: Largest sigma that can occur (sets the kernel radius
            ``ceil(truncate * max_sigma)``); default: the largest given.
        padding: ``"zeros"`` or ``"reflect"`` (half-sample symmetric, scipy's default mode).
        truncate: Kernel half-width in sigmas.

    Returns:
        (B, 1, H, W) blurred images (same dtype and device as ``x``).
    """
    b, c, h, w = x.shape
    if c != 1:
        raise ValueError(f"gaussian_blur expects (B, 1, H, W), got {tuple(x.shape)}")
    if padding not in ("zeros", "reflect"):
        raise ValueError(f"padding must be 'zeros' or 'reflect', got {padding!r}")
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(b)
    if max_sigma is None:
        max_sigma = float(sigma.max()) if b else 0.0
    radius = max(1, math.ceil(truncate * max_sigma - 1e-9))
    if padding == "reflect" or 4 * (2 * radius + 1) > min(h, w):
        # wide kernels on small images: two batched matrix products are cheaper
        k = gaussian_kernels(sigma, radius).to(x.dtype)
        gh = _blur_matrix(k, h, padding)
        gw = gh if w == h else _blur_matrix(k, w, padding)
        return (gh @ x[:, 0] @ gw.transpose(1, 2)).unsqueeze(1)
    k = gaussian_kernels(sigma, radius).to(x.dtype)
    y = x.reshape(1, b, h, w)
    y = F.conv2d(y, k.view(b, 1, -1, 1), padding=(radius, 0), groups=b)
    y = F.conv2d(y, k.view(b, 1, 1, -1), padding=(0, radius), groups=b)
    return y.reshape(b, 1, h, w)


def sample_centres(brain: torch.Tensor, window: int, generator: torch.Generator,
                   draws: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners of ``window`` x ``window`` windows centred on random brain pixels.

    The centre pixel is drawn uniformly among the brain pixels whose window fits inside the
    patch; a patch without such a pixel gets a uniformly random window.

    Args:
        brain: (B, 1, H, W) boolean brain mask (``H, W >= window``).
        window: Window side in pixels.
        generator: Source of randomness.
        draws: Number of independent windows per patch (``None``: one, without that axis).

    Returns:
        ``(top, left)``, two int64 tensors, (B,) or (draws, B), with the window's first row
        and column.
    """
    b, _, h, w = brain.shape
    if h < window or w < window:
        raise ValueError(f"patches of {h}x{w} are smaller than the {window}px anomaly window")
    half = window // 2
    nh, nw = h - window + 1, w - window + 1
    valid = brain[:, 0, half:half + nh, half:half + nw].reshape(b, -1)
    csum = valid.cumsum(dim=1, dtype=torch.int32)
    total = csum[:, -1]
    k = 1 if draws is None else draws
    u = rand((k, b), generator, brain.device)
    target = (u * total).floor().long().clamp(max=(total - 1).clamp_min(0)) + 1  # (k, B)
    idx = torch.searchsorted(csum, target.T.contiguous().to(csum.dtype)).T  # (k, B)
    uniform = (u * (nh * nw)).floor().long().clamp(max=nh * nw - 1)
    idx = torch.where(total > 0, idx, uniform)
    if draws is None:
        idx = idx[0]
    return idx // nw, idx % nw


def _flat_index(top: torch.Tensor, left: torch.Tensor, window: int, width: int
                ) -> torch.Tensor:
    ar = torch.arange(window, device=top.device)
    rows = (top[:, None] + ar)[:, :, None]
    cols = (left[:, None] + ar)[:, None, :]
    return (rows * width + cols).flatten(1)


def extract_windows(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, window: int
                    ) -> torch.Tensor:
    """(B, 1, window, window) crops of ``x`` (B, 1, H, W) at the given corners."""
    b, _, _, w = x.shape
    idx = _flat_index(top, left, window, w)
    return x.reshape(b, -1).gather(1, idx).view(b, 1, window, window)


def paste_windows(x: torch.Tensor, win: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                  inplace: bool = False) -> torch.Tensor:
    """``x`` (B, 1, H, W) with each sample's window replaced by ``win`` (a copy by default)."""
    b, _, _, w = x.shape
    idx = _flat_index(top, left, win.shape[-1], w)
    out = x.reshape(b, -1) if inplace else x.reshape(b, -1).clone()
    out.scatter_(1, idx, win.reshape(b, -1).to(x.dtype))
    return out.view_as(x)


def _grid(window: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    c = (window - 1) / 2.0
    ar = torch.arange(window, device=device, dtype=torch.float32) - c
    return ar[:, None].expand(window, window), ar[None, :].expand(window, window)


@functools.lru_cache(maxsize=8)
def _polar_basis(window: int, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Radius (S, S) and angular basis ``[cos(j phi); sin(j phi)]``, j = 1..k, (2k, S*S)."""
    yy, xx = _grid(window, device)
    rho = torch.sqrt(yy ** 2 + xx ** 2)
    phi = torch.atan2(yy, xx).reshape(1, -1)
    j = torch.arange(1, k + 1, device=device, dtype=torch.float32)[:, None]
    return rho, torch.cat([torch.cos(j * phi), torch.sin(j * phi)], dim=0)


def random_shapes(batch: int, window: int, generator: torch.Generator,
                  device: torch.device | str = "cpu", *, recipe: str = "authors",
                  edge_blur_p: float = EDGE_BLUR_P, families: tuple[str, ...] | None = None,
                  with_info: bool = False
                  ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Random anomaly shapes in a ``window`` x ``window`` square.

    One family per sample, with equal weight among ``families`` (default: all of the
    recipe's). ``authors`` recipe (:data:`FAMILIES`), sizes in px at a 64 px window (scaled
    by ``window / 64`` otherwise):

    - ``rectangle``: sides ``2 * (s // 2)`` with ``s`` uniform in 10..44 (each side), at a
      uniformly random position inside the window; rotated by U(-15, 15) degrees about the
      window centre half of the time;
    - ``disc``: diameter drawn from 10..44 (radius ``s // 2``), centre uniformly placed at
      least 10 px plus the radius from the border;
    - ``organic``: a star-shaped region ``rho <= r(phi)`` around a centre up to 7 z px from
      the window centre, ``r(phi) = r0 z (1 + sum_k a_k cos(k phi + p_k))``, k = 1..5,
      amplitudes decaying as 1/k and summing to 0.5, ``r0 ~ U(12, 25)``, zoom ``z ~ U(1, 2)``,
      clipped by the window. (Measured over 2,000 draws: area quartiles about 1,520 / 2,210 /
      2,930 px, 69 % touching the border; the authors' stored shapes give 1,514 / 2,306 /
      3,048 and 70 %.)

    With probability ``edge_blur_p`` the edge is blurred with an integer sigma drawn from
    0..4 (0 = no blur), reflecting borders, kernel truncated at 4 sigma.

    ``legacy`` recipe (:data:`LEGACY_FAMILIES`): centred shapes; ``rectangle`` sides
    U(0.12, 0.75) x window, rotated by U(-15, 15) degrees half of the time; ``ellipse``
    semi-axes U(0.06, 0.4) x window, any orientation; ``blob`` a star-shaped region of radius
    ``r0 = U(0.1, 0.25) x window`` with harmonic amplitudes summing to at most 0.9; edge
    softened with probability ``edge_blur_p`` by sigma ~ U(0, 5) (zero borders).

    Args:
        batch: Number of shapes.
        window: Side of the square in pixels.
        generator: Source of randomness.
        device: Device of the result.
        recipe: ``authors`` or ``legacy``.
        edge_blur_p: Probability of softening the edge.
        families: Families to draw from (a subset of the recipe's).
        with_info: Also return ``{"family": (B,) index into the recipe's families,
            "edge_sigma": (B,) blur sigma (0 = sharp)}``.

    Returns:
        (B, 1, window, window) float32 weights in [0, 1] (and the info dict).
    """
    if recipe not in SHAPE_RECIPES:
        raise ValueError(f"unknown shape recipe {recipe!r}; choose from {list(SHAPE_RECIPES)}")
    known = FAMILIES if recipe == "authors" else LEGACY_FAMILIES
    families = known if families is None else tuple(families)
    unknown = set(families) - set(known)
    if unknown or not families:
        raise ValueError(f"unknown shape families {sorted(unknown)} for the {recipe} recipe; "
                         f"choose from {known}")
    device = torch.device(device)
    if recipe == "legacy":
        m, fam, sigma = _legacy_shapes(batch, window, generator, device, edge_blur_p,
                                       families)
    else:
        m, fam, sigma = _authors_shapes(batch, window, generator, device, edge_blur_p,
                                        families)
    if with_info:
        return m, {"family": fam, "edge_sigma": sigma}
    return m


def _pick_family(u: torch.Tensor, families: tuple[str, ...], known: tuple[str, ...]
                 ) -> torch.Tensor:
    ids = torch.tensor([known.index(f) for f in families], device=u.device)
    return ids[(u * len(families)).floor().long().clamp(max=len(families) - 1)]


def _randint(u: torch.Tensor, lo: torch.Tensor | int, hi: torch.Tensor | int) -> torch.Tensor:
    """Integers uniform in ``[lo, hi]`` (inclusive) from uniforms ``u``."""
    lo_t = torch.as_tensor(lo, device=u.device)
    span = torch.as_tensor(hi, device=u.device) - lo_t + 1
    return lo_t + (u * span).floor().long().clamp(max=span - 1)


def _masks_by_family(u: torch.Tensor, fam: torch.Tensor, S: int,
                     draws: Sequence[Callable[[torch.Tensor, int], torch.Tensor]]
                     ) -> torch.Tensor:
    """``(B, 1, S, S)`` masks: row ``i`` drawn by ``draws[fam[i]]`` from its uniforms ``u[i]``."""
    m = torch.zeros(u.shape[0], S, S, device=u.device)
    for fid, draw in enumerate(draws):
        sel = torch.nonzero(fam == fid).flatten()
        if sel.numel():
            m[sel] = draw(u[sel], S).to(m.dtype)
    return m.unsqueeze(1)


def _authors_shapes(B: int, S: int, generator: torch.Generator, device: torch.device,
                    edge_blur_p: float, families: tuple[str, ...]
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    f = S / AUTHORS_WINDOW
    K = _BLOB_HARMONICS
    # one block of uniforms per batch keeps the draw count independent of the outcome
    u = rand((B, 12 + 2 * K), generator, device)
    fam = _pick_family(u[:, 0], families, FAMILIES)
    m = _masks_by_family(u, fam, S, [functools.partial(d, f=f) for d in
                                     (_authors_rectangles, _authors_discs, _organic)])
    sigma = (u[:, 10] * (AUTHORS_MAX_SIGMA + 1)).floor().clamp(max=AUTHORS_MAX_SIGMA) * f
    sigma = torch.where(u[:, 11] < edge_blur_p, sigma, 0.0)
    sel = torch.nonzero(sigma > 0).flatten()
    if sel.numel():
        m[sel] = gaussian_blur(m[sel], sigma[sel], max_sigma=AUTHORS_MAX_SIGMA * f,
                               padding="reflect", truncate=4.0).clamp_(0.0, 1.0)
    return m, fam, sigma


def _sizes(u: torch.Tensor, f: float) -> torch.Tensor:
    """Side or diameter in 10..44 px (scaled by ``f``): the authors' ``randint(10, 44)``."""
    return _randint(u, round(10 * f), round(44 * f))


def _authors_rectangles(u: torch.Tensor, S: int, f: float) -> torch.Tensor:
    yy, xx = _grid(S, u.device)
    c = (S - 1) / 2.0
    hh = _sizes(u[:, 1], f) // 2  # half sides: the rectangle spans 2 * (s // 2) pixels
    hw = _sizes(u[:, 2], f) // 2
    top = _randint(u[:, 3], 0, S - 2 * hh)
    left = _randint(u[:, 4], 0, S - 2 * hw)
    # centre of the pixel run [top, top + 2 hh), relative to the window centre
    cy = (top + hh - 0.5 - c).float()[:, None, None]
    cx = (left + hw - 0.5 - c).float()[:, None, None]
    rot = torch.where(u[:, 5] < 0.5, (u[:, 6] * 2 - 1) * math.radians(15.0), 0.0)
    co, si = torch.cos(rot)[:, None, None], torch.sin(rot)[:, None, None]
    # rotation about the window centre: rotate the pixel back, then test the rectangle
    yr, xr = co * yy - si * xx, si * yy + co * xx
    return ((yr - cy).abs() <= hh[:, None, None].float()) & \
        ((xr - cx).abs() <= hw[:, None, None].float())


def _authors_discs(u: torch.Tensor, S: int, f: float) -> torch.Tensor:
    r = (_sizes(u[:, 1], f) // 2).float()
    margin = round(10 * f)
    lo = r.long() + margin
    hi = S - r.long() - margin
    cy = _randint(u[:, 3], lo, torch.maximum(hi, lo)).float()
    cx = _randint(u[:, 4], lo, torch.maximum(hi, lo)).float()
    # the authors' pixel grid runs from 0 to S in S steps
    ar = torch.arange(S, device=u.device, dtype=torch.float32) * (S / (S - 1))
    d2 = (ar[None, :, None] - cy[:, None, None]) ** 2 + (ar[None, None, :] - cx[:, None, None]) ** 2
    return d2 <= (r ** 2)[:, None, None]


def _organic(u: torch.Tensor, S: int, f: float) -> torch.Tensor:
    """Organic blobs of the authors' size distribution (u: (n, 12 + 2K) uniforms)."""
    K = _BLOB_HARMONICS
    c = (S - 1) / 2.0
    zoom = 1.0 + u[:, 1]
    lo, hi = _ORGANIC_RADIUS
    r0 = (lo + (hi - lo) * u[:, 2]) * f * zoom
    ang = u[:, 3] * 2 * math.pi
    off = _ORGANIC_OFFSET * f * zoom * torch.sqrt(u[:, 4])
    cy, cx = c + off * torch.sin(ang), c + off * torch.cos(ang)
    kk = torch.arange(1, K + 1, device=u.device, dtype=torch.float32)
    amp = u[:, 12:12 + K] / kk
    amp = amp * (_ORGANIC_AMPLITUDE / amp.sum(dim=1, keepdim=True).clamp_min(1e-6))
    phase = u[:, 12 + K:12 + 2 * K] * 2 * math.pi
    ar = torch.arange(S, device=u.device, dtype=torch.float32)
    dy = ar[None, :, None] - cy[:, None, None]
    dx = ar[None, None, :] - cx[:, None, None]
    rho, phi = torch.hypot(dy, dx), torch.atan2(dy, dx)
    wave = torch.cos(kk[None, :, None, None] * phi[:, None] + phase[:, :, None, None])
    radius = r0[:, None, None] * (1 + (amp[:, :, None, None] * wave).sum(1))
    return rho <= radius


def _legacy_shapes(B: int, S: int, generator: torch.Generator, device: torch.device,
                   edge_blur_p: float, families: tuple[str, ...]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # one block of uniforms per batch keeps the draw count independent of the outcome
    u = rand((B, 12 + 2 * _BLOB_HARMONICS), generator, device)
    fam = _pick_family(u[:, 0], families, LEGACY_FAMILIES)
    m = _masks_by_family(u, fam, S, (_rectangles, _ellipses, _blobs))
    sigma = rand((B,), generator, device) * MAX_EDGE_SIGMA
    blurred = (u[:, 11] < edge_blur_p) & (sigma > 0)
    sel = torch.nonzero(blurred).flatten()
    if sel.numel():
        m[sel] = gaussian_blur(m[sel], sigma[sel], max_sigma=MAX_EDGE_SIGMA).clamp_(0.0, 1.0)
    return m, fam, torch.where(blurred, sigma, 0.0)


def _rectangles(u: torch.Tensor, S: int) -> torch.Tensor:
    """Rectangles, rotated by up to +-15 degrees half of the time (u: (n, >=5) uniforms)."""
    yy, xx = _grid(S, u.device)
    rot = torch.where(u[:, 1] < 0.5, (u[:, 2] * 2 - 1) * math.radians(15.0), 0.0)
    c, s = torch.cos(rot)[:, None, None], torch.sin(rot)[:, None, None]
    ur, vr = c * xx + s * yy, -s * xx + c * yy
    hx = (0.06 + 0.315 * u[:, 3])[:, None, None] * S
    hy = (0.06 + 0.315 * u[:, 4])[:, None, None] * S
    return (ur.abs() <= hx) & (vr.abs() <= hy)


def _ellipses(u: torch.Tensor, S: int) -> torch.Tensor:
    """Ellipses of any orientation (u: (n, >=8) uniforms)."""
    yy, xx = _grid(S, u.device)
    th = (u[:, 5] * math.pi)[:, None, None]
    c, s = torch.cos(th), torch.sin(th)
    ue, ve = c * xx + s * yy, -s * xx + c * yy
    ax = (0.06 + 0.34 * u[:, 6])[:, None, None] * S
    ay = (0.06 + 0.34 * u[:, 7])[:, None, None] * S
    return (ue / ax) ** 2 + (ve / ay) ** 2 <= 1.0


def _blobs(u: torch.Tensor, S: int) -> torch.Tensor:
    """Organic star-shaped blobs with a random Fourier radius (u: (n, 12 + 2K) uniforms).

    Harmonics 1..K live on a fixed angular basis, so one small matmul gives every radius map.
    """
    K = _BLOB_HARMONICS
    rho, basis = _polar_basis(S, K, u.device)
    kk = torch.arange(1, K + 1, device=u.device, dtype=torch.float32)
    amp = u[:, 12:12 + K] / kk
    amp = amp * (0.9 / amp.sum(dim=1, keepdim=True).clamp_min(0.9))
    phase = u[:, 12 + K:12 + 2 * K] * 2 * math.pi
    coef = torch.cat([amp * torch.cos(phase), -amp * torch.sin(phase)], dim=1)  # (n, 2K)
    r0 = (0.1 + 0.15 * u[:, 10])[:, None] * S
    radius = r0 * (1 + coef @ basis)
    return (rho.reshape(1, -1) <= radius).view(-1, S, S)
