"""Batched anomaly shapes: window placement, rectangles, ellipses, organic blobs, soft edges.

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

import torch
import torch.nn.functional as F

#: shape families, drawn with equal weight
FAMILIES: tuple[str, ...] = ("rectangle", "ellipse", "blob")
#: largest soft-edge blur sigma (pixels); sigma ~ U(0, MAX_EDGE_SIGMA)
MAX_EDGE_SIGMA: float = 5.0
#: probability that a shape's edge is softened
EDGE_BLUR_P: float = 0.7
_BLOB_HARMONICS: int = 5


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


def _blur_matrix(kernels: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n, n) banded matrices applying (B, 2r+1) ``kernels`` with zero padding."""
    radius = (kernels.shape[1] - 1) // 2
    t = torch.arange(n, device=kernels.device)
    d = t[None, :] - t[:, None]  # column minus row: the tap used at (row, col)
    band = d.abs() <= radius
    idx = (d + radius).clamp(0, 2 * radius).flatten()
    return kernels[:, idx].view(-1, n, n) * band


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor | float, max_sigma: float | None = None
                  ) -> torch.Tensor:
    """Separable Gaussian blur of each sample with its own sigma (zero padding).

    Args:
        x: (B, 1, H, W) images.
        sigma: (B,) per-sample sigmas, or one float for all.
        max_sigma: Largest sigma that can occur (sets the kernel radius ``ceil(3 max_sigma)``);
            default: the largest given.

    Returns:
        (B, 1, H, W) blurred images (same dtype and device as ``x``).
    """
    b, c, h, w = x.shape
    if c != 1:
        raise ValueError(f"gaussian_blur expects (B, 1, H, W), got {tuple(x.shape)}")
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(b)
    if max_sigma is None:
        max_sigma = float(sigma.max()) if b else 0.0
    radius = max(1, math.ceil(3.0 * max_sigma))
    if 4 * (2 * radius + 1) > min(h, w):
        # wide kernels on small images: two batched matrix products are cheaper
        k = gaussian_kernels(sigma, radius).to(x.dtype)
        gh = _blur_matrix(k, h)
        gw = gh if w == h else _blur_matrix(k, w)
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
                  device: torch.device | str = "cpu", *, edge_blur_p: float = EDGE_BLUR_P,
                  max_edge_sigma: float = MAX_EDGE_SIGMA,
                  families: tuple[str, ...] = FAMILIES) -> torch.Tensor:
    """Random anomaly shapes, centred in a ``window`` x ``window`` square.

    One family per sample, with equal weight among ``families``:

    - ``rectangle``: sides U(0.12, 0.75) x window, rotated by U(-15, 15) degrees half of the
      time;
    - ``ellipse``: semi-axes U(0.06, 0.4) x window, any orientation;
    - ``blob``: an organic star-shaped region ``rho <= r(phi)`` with a random Fourier radius
      ``r(phi) = r0 (1 + sum_k a_k cos(k phi + p_k))``, k = 1..5, amplitudes decaying as 1/k
      and ``sum |a_k| <= 0.9`` (so the region is connected and contains its centre);
      ``r0 = U(0.1, 0.25) x window``.

    With probability ``edge_blur_p`` the edge is softened by a Gaussian blur with
    sigma ~ U(0, ``max_edge_sigma``).

    Args:
        batch: Number of shapes.
        window: Side of the square in pixels.
        generator: Source of randomness.
        device: Device of the result.
        edge_blur_p: Probability of softening the edge.
        max_edge_sigma: Largest soft-edge sigma.
        families: Families to draw from (any of :data:`FAMILIES`).

    Returns:
        (B, 1, window, window) float32 weights in [0, 1].
    """
    unknown = set(families) - set(FAMILIES)
    if unknown or not families:
        raise ValueError(f"unknown shape families {sorted(unknown)}; choose from {FAMILIES}")
    device = torch.device(device)
    B, S = batch, window
    # one block of uniforms per batch keeps the draw count independent of the outcome
    u = rand((B, 12 + 2 * _BLOB_HARMONICS), generator, device)
    fam_ids = torch.tensor([FAMILIES.index(f) for f in families], device=device)
    fam = fam_ids[(u[:, 0] * len(families)).floor().long().clamp(max=len(families) - 1)]
    m = torch.zeros(B, S, S, device=device)
    for fid, draw in enumerate((_rectangles, _ellipses, _blobs)):
        sel = torch.nonzero(fam == fid).flatten()
        if sel.numel():
            m[sel] = draw(u[sel], S).to(m.dtype)
    m = m.unsqueeze(1)
    sigma = rand((B,), generator, device) * max_edge_sigma
    sel = torch.nonzero((u[:, 11] < edge_blur_p) & (sigma > 0)).flatten()
    if sel.numel():
        m[sel] = gaussian_blur(m[sel], sigma[sel], max_sigma=max_edge_sigma).clamp_(0.0, 1.0)
    return m


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
