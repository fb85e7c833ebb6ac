"""Research tools, on top of the trainer and the run folders it writes. Submodules:

- :mod:`rlsdk.research.stats`: aggregate metrics, bootstrap intervals, tests, corrections, power;
- :mod:`rlsdk.research.experiment`: arms x tasks x seeds (``rlsdk experiment``, ``rlsdk ablate``);
- :mod:`rlsdk.research.compare`: an experiment's arms against a baseline (``rlsdk compare``);
- :mod:`rlsdk.research.sweep`: hyperparameter search with Optuna (``rlsdk sweep``);
- :mod:`rlsdk.research.report`: plots of training dynamics and comparisons (``rlsdk report``);
- :mod:`rlsdk.research.reproduce`: train a run again and compare (``rlsdk reproduce``).

Seeds, run manifests, lock files and run folders are in :mod:`rlsdk.provenance`.
"""

__all__: list[str] = []
