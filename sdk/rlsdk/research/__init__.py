"""Research tools: seeds and determinism, run manifests (statistics and experiments come later)."""

from rlsdk.research.manifest import build_manifest
from rlsdk.research.seeds import SeedTree

__all__ = ["SeedTree", "build_manifest"]
