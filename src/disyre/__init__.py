"""disyre: unsupervised anomaly detection in brain MRI by synthetic restoration.

Stages (one package or module each, data flows one way):
``data`` -> ``corruption`` -> ``model`` / ``training`` -> ``inference`` -> ``evaluation``;
``demo`` builds a cohort from real anatomy and runs them all; ``cli`` exposes them.
"""

__version__ = "0.1.0"
