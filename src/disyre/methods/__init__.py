"""The methods: one module per method, each registering its whole recipe (a
:class:`~disyre.methods.base.Method`) and the restoration procedures it brings.

Importing this package fills the registry and installs it in :mod:`disyre.config`, so that
config validation and ``--set corruption.name=...`` know every method. Code that builds a run
config for use (training, detection, the benchmark, the CLI) imports it first.

- :mod:`~disyre.methods.dag`: DISYRE (``dag``) and its ``ensemble`` / ``multistep`` detection;
- :mod:`~disyre.methods.ablations`: ``fpi``, ``bias``;
- :mod:`~disyre.methods.gaussian`: the Gaussian-noise foil;
- :mod:`~disyre.methods.dae`, :mod:`~disyre.methods.anoddpm` (the ``walk``),
  :mod:`~disyre.methods.pddpm` (the ``patched`` restoration): the field's baselines.

Adding a method is one new module here that calls :func:`register` (and
:func:`register_restoration` for a new detection procedure), imported below.

Example:
    >>> from disyre.methods import method_names
    >>> method_names()[:4]
    ('dag', 'fpi', 'bias', 'gaussian')
"""

# isort: off
# registration order = the order methods are listed in (DISYRE first, then its ablations and
# foil, then the field's baselines)
from disyre.methods import dag  # noqa: F401
from disyre.methods import ablations  # noqa: F401
from disyre.methods import gaussian  # noqa: F401
from disyre.methods import dae  # noqa: F401
from disyre.methods import anoddpm  # noqa: F401
from disyre.methods import pddpm  # noqa: F401
from disyre.methods import andi  # noqa: F401
# isort: on
from disyre.methods.base import (
    Method,
    Restoration,
    get_method,
    get_restoration,
    make_corruption,
    method_names,
    register,
    register_restoration,
    restoration_names,
)

__all__ = [
    "Method",
    "Restoration",
    "get_method",
    "get_restoration",
    "make_corruption",
    "method_names",
    "register",
    "register_restoration",
    "restoration_names",
]
