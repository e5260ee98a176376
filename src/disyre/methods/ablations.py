"""DISYRE's ablations: its synthetic anomalies with one component only, ``fpi`` (texture:
foreign-patch interpolation) and ``bias`` (intensity bias); trained and detected as DISYRE
(docs/methods.md)."""

from __future__ import annotations

from disyre.methods.base import Method, register
from disyre.methods.dag import (
    DISYRE_V2,
    ENSEMBLE_INFERENCE,
    anomaly_window_rule,
    synthetic_anomalies,
)

FPI = register(Method(
    name="fpi",
    title="FPI ablation",
    publication="ablation of " + DISYRE_V2,
    sources=(DISYRE_V2, "docs/method.md"),
    make_corruption=synthetic_anomalies,
    restorations=("ensemble", "multistep"),
    inference=ENSEMBLE_INFERENCE,
    anomaly_window=True,
    validate=anomaly_window_rule,
))

BIAS = register(Method(
    name="bias",
    title="bias ablation",
    publication="ablation of " + DISYRE_V2,
    sources=(DISYRE_V2, "docs/method.md"),
    make_corruption=synthetic_anomalies,
    restorations=("ensemble", "multistep"),
    inference=ENSEMBLE_INFERENCE,
    anomaly_window=True,
    codebook=True,
    validate=anomaly_window_rule,
))
