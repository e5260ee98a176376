"""Training batches: ``n_volumes`` random volumes x ``n_slices`` random axial slices -> patches.

Each patch is a ``P x P`` window of an axial slice that contains brain, placed at random inside
that slice's foreground bounding box; where the box is smaller than ``P`` the patch holds the
whole box at a random offset and is zero-padded. (Should a window miss the brain of a slice
whose brain is scattered, it is re-drawn around a random brain pixel, so every patch holds
brain.) The per-slice boxes are computed once, when
the sampler is built; a batch then costs one slice copy per patch (no per-pixel Python), which
keeps data loading a small fraction of a training step even for memory-mapped volumes.

Given the volumes' brain masks (e.g. the cache's, :meth:`VolumeCache.masks`), "brain" is the
mask, not the non-zero voxels (scaling can map the darkest brain voxels to exactly 0), and
:meth:`PatchSampler.sample_pair` returns each patch's brain mask with it.

Example:
    >>> import numpy as np
    >>> from disyre.config import SamplerConfig
    >>> vol = np.zeros((10, 40, 50), np.float32); vol[2:8, 5:35, 10:45] = 0.5
    >>> s = PatchSampler([vol, vol[:, :30]], SamplerConfig(n_volumes=2, n_slices=3,
    ...                  patch_size=32), seed=0)
    >>> s.sample().shape
    torch.Size([6, 1, 32, 32])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from disyre.config import SamplerConfig

__all__ = ["PatchSampler", "slice_boxes"]


def slice_boxes(vol: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Foreground box of every axial slice of a ``(D, H, W)`` volume.

    Args:
        vol: The volume.
        mask: Its brain mask (default: the non-zero voxels).

    Returns:
        ``(D, 5)`` int64 array of ``[has_brain, row0, row1, col0, col1]`` (inclusive bounds;
        zeros where a slice has no brain).
    """
    nz = np.asarray(vol) > 0 if mask is None else np.asarray(mask, bool)
    rows = nz.any(axis=2)  # (D, H)
    cols = nz.any(axis=1)  # (D, W)
    has = rows.any(axis=1)
    h, w = rows.shape[1], cols.shape[1]
    r0 = rows.argmax(axis=1)
    r1 = h - 1 - rows[:, ::-1].argmax(axis=1)
    c0 = cols.argmax(axis=1)
    c1 = w - 1 - cols[:, ::-1].argmax(axis=1)
    out = np.stack([has, r0, r1, c0, c1], axis=1).astype(np.int64)
    out[~has] = 0
    return out


class PatchSampler:
    """Random in-brain patches from a list of ``(d, h, w)`` volumes (shapes may differ).

    Args:
        volumes: Float arrays in [0, 1], background exactly 0 (e.g. memory-mapped cache
            arrays from :meth:`disyre.data.cache.VolumeCache.volumes`).
        cfg: ``n_volumes``, ``n_slices`` and ``patch_size``.
        seed: Seed of the sampler's own ``numpy.random.Generator`` (ignored if ``generator``
            is given).
        generator: An explicit ``numpy.random.Generator``.
        masks: Brain masks of the volumes (same shapes); default: the non-zero voxels.
        whole_slices: Draw whole slices instead of patches, as detection sees them with
            whole slices (``inference.window=0``): each slice of a volume of ``h x w`` is
            zero-padded, centred, to ``ceil(h / m) * m x ceil(w / m) * m`` (``m`` =
            ``size_multiple``) and that frame sits at the top-left corner of a canvas of the
            largest frame of all volumes (zeros elsewhere), so that a grid of boxes from the
            canvas's corner is detection's grid on that slice. ``patch_size`` is ignored.
        size_multiple: The network's size step (``RestorationNet.min_size``).

    Raises:
        ValueError: No volumes, a volume that is not 3D, a mask of another shape, or a
            volume without brain.
    """

    def __init__(self, volumes: Sequence[np.ndarray], cfg: SamplerConfig | None = None,
                 seed: int | None = 0, generator: np.random.Generator | None = None,
                 masks: Sequence[np.ndarray] | None = None, whole_slices: bool = False,
                 size_multiple: int = 1) -> None:
        self.cfg = cfg or SamplerConfig()
        self.whole_slices = bool(whole_slices)
        if size_multiple < 1:
            raise ValueError(f"size_multiple must be >= 1, got {size_multiple}")
        self.size_multiple = int(size_multiple)
        if self.cfg.patch_size < 1 or self.cfg.n_volumes < 1 or self.cfg.n_slices < 1:
            raise ValueError(f"invalid sampler config {self.cfg}")
        if len(volumes) == 0:
            raise ValueError("PatchSampler needs at least one volume")
        self.volumes = list(volumes)
        self.masks = None if masks is None else list(masks)
        if self.masks is not None and len(self.masks) != len(self.volumes):
            raise ValueError(f"{len(self.masks)} brain masks for {len(self.volumes)} volumes")
        self.rng = generator if generator is not None else np.random.default_rng(seed)
        self._slices: list[np.ndarray] = []  # per volume: indices of slices with brain
        self._boxes: list[np.ndarray] = []   # per volume: (n_brain_slices, 4) boxes
        for i, v in enumerate(self.volumes):
            if v.ndim != 3:
                raise ValueError(f"volume {i}: expected (d, h, w), got shape {v.shape}")
            mk = None if self.masks is None else self.masks[i]
            if mk is not None and tuple(mk.shape) != tuple(v.shape):
                raise ValueError(f"volume {i}: brain mask of shape {mk.shape} for a volume of "
                                 f"shape {v.shape}")
            b = slice_boxes(v, mk)
            idx = np.flatnonzero(b[:, 0])
            if idx.size == 0:
                raise ValueError(f"volume {i}: no slice contains brain (all zero)")
            self._slices.append(idx)
            self._boxes.append(b[idx, 1:])
        m = self.size_multiple
        #: per volume: the padded frame (rows, cols) and the slice's offset in it
        self.frames = [(-(-v.shape[1] // m) * m, -(-v.shape[2] // m) * m)
                       for v in self.volumes]
        self.offsets = [((fh - v.shape[1]) // 2, (fw - v.shape[2]) // 2)
                        for (fh, fw), v in zip(self.frames, self.volumes, strict=True)]
        self.canvas = (max(f[0] for f in self.frames), max(f[1] for f in self.frames))

    @property
    def size(self) -> tuple[int, int]:
        """``(rows, cols)`` of the samples: the patch, or the canvas of whole slices."""
        p = self.cfg.patch_size
        return self.canvas if self.whole_slices else (p, p)

    @property
    def batch_size(self) -> int:
        """Patches per batch (``n_volumes * n_slices``)."""
        return self.cfg.n_volumes * self.cfg.n_slices

    def _start(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Random window starts so that a P-window lies inside [lo, hi] or covers it."""
        p = self.cfg.patch_size
        a = np.minimum(lo, hi - p + 1)  # box smaller than P: start anywhere that covers it
        b = np.maximum(lo, hi - p + 1)
        return a + (self.rng.random(a.shape) * (b - a + 1)).astype(np.int64)

    def sample_numpy(self) -> np.ndarray:
        """One batch as a float32 numpy array ``(n_volumes * n_slices, 1, P, P)``."""
        return self._sample(False)[0]

    def _sample(self, with_masks: bool) -> tuple[np.ndarray, np.ndarray | None]:
        cfg, p = self.cfg, self.cfg.patch_size
        nv = len(self.volumes)
        vids = self.rng.choice(nv, size=cfg.n_volumes, replace=nv < cfg.n_volumes)
        out = np.zeros((self.batch_size, 1, *self.size), dtype=np.float32)
        brain = np.zeros((self.batch_size, 1, *self.size), dtype=bool) if with_masks else None
        k = 0
        for v in vids:
            vol, idx, boxes = self.volumes[v], self._slices[v], self._boxes[v]
            mk = None if self.masks is None else self.masks[v]
            pick = self.rng.choice(idx.size, size=cfg.n_slices, replace=idx.size < cfg.n_slices)
            bx = boxes[pick]
            if self.whole_slices:  # the slice centred in its frame, at the canvas's corner
                tops = np.full(len(pick), -self.offsets[v][0])
                lefts = np.full(len(pick), -self.offsets[v][1])
            else:
                tops = self._start(bx[:, 0], bx[:, 1])
                lefts = self._start(bx[:, 2], bx[:, 3])
            for z, t, left in zip(idx[pick], tops, lefts, strict=True):
                sl_brain = vol[z] if mk is None else mk[z]
                if brain is not None:  # a bool window: non-zero (or masked) pixels
                    self._fill(brain[k, 0], sl_brain, t, left)
                    has = brain[k, 0].any()
                else:
                    has = self._has_brain(sl_brain, t, left, p)
                if not has and not self.whole_slices:  # rare: the window missed the brain
                    t, left = self._on_brain(sl_brain, p)
                    if brain is not None:
                        self._fill(brain[k, 0], sl_brain, t, left)
                self._fill(out[k, 0], vol[z], t, left)
                k += 1
        return out, brain

    def sample_pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch and its brain mask: float32 and bool tensors ``(B, 1, P, P)`` (CPU).

        Without masks the brain mask is the non-zero pixels of the patches.
        """
        x, brain = self._sample(True)
        return torch.from_numpy(x), torch.from_numpy(brain)

    def _has_brain(self, sl: np.ndarray, t: int, left: int, p: int) -> bool:
        h, w = sl.shape
        r0, r1 = max(t, 0), min(t + p, h)
        c0, c1 = max(left, 0), min(left + p, w)
        return bool(r1 > r0 and c1 > c0 and (np.asarray(sl[r0:r1, c0:c1]) > 0).any())

    def _on_brain(self, sl: np.ndarray, p: int) -> tuple[int, int]:
        """Window start around a random brain pixel of the slice (fallback for sparse slices)."""
        rr, cc = np.nonzero(np.asarray(sl) > 0)
        i = int(self.rng.integers(rr.size))
        t = int(rr[i]) - int(self.rng.integers(p))
        left = int(cc[i]) - int(self.rng.integers(p))
        return t, left

    @staticmethod
    def _fill(dst: np.ndarray, sl: np.ndarray, t: int, left: int) -> None:
        """Copy the window of slice ``sl`` starting at (t, left) into ``dst``, zero-padded."""
        p, q = dst.shape
        h, w = sl.shape
        r0, r1 = max(t, 0), min(t + p, h)
        c0, c1 = max(left, 0), min(left + q, w)
        dst[:] = 0
        dst[r0 - t:r1 - t, c0 - left:c1 - left] = sl[r0:r1, c0:c1]

    def sample(self) -> torch.Tensor:
        """One batch as a float32 tensor ``(n_volumes * n_slices, 1, P, P)`` on the CPU."""
        return torch.from_numpy(self.sample_numpy())

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Endless stream of batches."""
        while True:
            yield self.sample()
