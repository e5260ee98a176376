"""The denoising autoencoder with coarse noise (``dae``, Kascenas et al., MIDL 2022): the
network restores scans corrupted by coarse Gaussian noise
(:mod:`disyre.corruption.coarse_noise`) and detection restores the scan itself once
(docs/methods.md)."""

from __future__ import annotations

from collections.abc import Sequence

from disyre.config import CorruptionConfig, RunConfig
from disyre.corruption.base import Corruption
from disyre.corruption.coarse_noise import CoarseNoise
from disyre.methods.base import Method, register

PUBLICATION = ("A. Kascenas, N. Pugeault, A. Q. O'Neil, Denoising Autoencoders for Unsupervised "
               "Anomaly Detection in Brain MRI, MIDL 2022 (PMLR 172:653-664)")


def coarse_noise(cfg: CorruptionConfig, codebook: Sequence[float] | None = None, *,
                 bank_size: int = 512) -> Corruption:
    """Coarse Gaussian noise (:class:`~disyre.corruption.coarse_noise.CoarseNoise`)."""
    return CoarseNoise()


def one_restoration_rule(cfg: RunConfig) -> list[str]:
    """Detection restores the scan itself once: ``ensemble`` at level 0 alone."""
    f = cfg.inference
    if f.method == "ensemble" and list(f.levels) == [0]:
        return []
    return ["inference must be method=ensemble and levels=[0] for corruption.name=dae (the "
            "autoencoder restores the scan itself once), got "
            f"'method={f.method}, levels={f.levels}'"]


DAE = register(Method(
    name="dae",
    title="denoising autoencoder (coarse noise)",
    publication=PUBLICATION,
    sources=(PUBLICATION, "the authors' public code (GPL-2.0; facts only)"),
    make_corruption=coarse_noise,
    restorations=("ensemble",),
    inference={"method": "ensemble", "levels": [0]},
    own_inference=True,
    # the authors' code augments nothing and weights no map by foreground
    augment=False,
    foreground_weighting=False,
    validate=one_restoration_rule,
))
