"""Research tools: seeds and run manifests (here), statistics (:mod:`rlsdk.research.stats`),
multi-seed experiments (:mod:`rlsdk.research.experiment`) and comparisons (:mod:`rlsdk.research.compare`)."""

from rlsdk.research.manifest import build_manifest
from rlsdk.research.seeds import SeedTree

__all__ = ["SeedTree", "build_manifest"]
