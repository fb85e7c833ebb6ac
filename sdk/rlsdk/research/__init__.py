"""Research tools. Here: seeds (:class:`SeedTree`) and run manifests (:func:`build_manifest`). Submodules:

- :mod:`rlsdk.research.stats`: aggregate metrics, bootstrap intervals, tests, corrections, power;
- :mod:`rlsdk.research.experiment`: arms x tasks x seeds (``rlsdk experiment``, ``rlsdk ablate``);
- :mod:`rlsdk.research.compare`: an experiment's arms against a baseline (``rlsdk compare``);
- :mod:`rlsdk.research.sweep`: hyperparameter search with Optuna (``rlsdk sweep``);
- :mod:`rlsdk.research.report`: plots of training dynamics and comparisons (``rlsdk report``);
- :mod:`rlsdk.research.reproduce`: train a run again and compare (``rlsdk reproduce``);
- :mod:`rlsdk.research.packages`: installed versions, lock files and their differences (``rlsdk env``).
"""

from rlsdk.research.manifest import build_manifest
from rlsdk.research.seeds import SeedTree

__all__ = ["SeedTree", "build_manifest"]
