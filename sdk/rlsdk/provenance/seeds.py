"""One root seed split into independent per-component streams.

``np.random.SeedSequence(root).spawn`` derives a child seed per named stream (reference:
methodology.md section 10), so adding a stream never changes the others.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["SeedTree", "STREAMS"]

#: The named seed streams, in spawn order (``init``, ``data``, ``sampling``, ``eval``). New streams are
#: appended, so earlier streams keep their seeds.
STREAMS = ("init", "data", "sampling", "eval")


class SeedTree:
    """Child seeds and ``torch.Generator`` objects derived from a root seed.

    Example:
        >>> tree = SeedTree(0)
        >>> tree.seed("data") == SeedTree(0).seed("data")
        True
        >>> tree.seed("data") != tree.seed("sampling")
        True
    """

    def __init__(self, root: int):
        self.root = int(root)
        children = np.random.SeedSequence(self.root).spawn(len(STREAMS))
        self.seeds = {
            name: int(child.generate_state(1, dtype=np.uint64)[0] % (2**63)) for name, child in zip(STREAMS, children)
        }

    def seed(self, stream: str) -> int:
        """The seed of ``stream`` (one of :data:`STREAMS`)."""
        if stream not in self.seeds:
            raise KeyError(f"unknown seed stream {stream!r}; valid: {', '.join(STREAMS)}")
        return self.seeds[stream]

    def generator(self, stream: str) -> torch.Generator:
        """A fresh CPU ``torch.Generator`` seeded for ``stream``."""
        return torch.Generator().manual_seed(self.seed(stream))

    def to_dict(self) -> dict[str, int]:
        """Root and child seeds, for the run manifest."""
        return {"root": self.root, **self.seeds}
