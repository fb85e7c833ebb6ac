"""Provenance: what it takes to know, and to repeat, what produced a run.

- :mod:`rlsdk.provenance.seeds`: one root seed split into named, independent streams
  (:class:`~rlsdk.provenance.seeds.SeedTree`);
- :mod:`rlsdk.provenance.manifest`: the run manifest (``manifest.json``: command line, versions,
  packages, hardware, git state, plugins, data hashes; :func:`~rlsdk.provenance.manifest.build_manifest`);
- :mod:`rlsdk.provenance.packages`: installed versions, lock files and their differences (``rlsdk env``);
- :mod:`rlsdk.provenance.rundir`: the run folder (atomic writes, checkpoints, metrics, the folder lock).

This layer sits on the contract (``rlsdk.errors``) alone: it imports neither the trainer nor the
research tools, which both use it. Importing this package imports none of its modules.
"""

from __future__ import annotations

__all__: list[str] = []
