"""Sphinx configuration of the rlsdk documentation site.

Build (offline, warnings are errors, every cross-reference checked)::

    python -m sphinx -W --keep-going -n -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

# -- Project -----------------------------------------------------------------------------------------

project = "rlsdk"
author = "the rlsdk authors"
copyright = "2026, the rlsdk authors"
release = importlib.metadata.version("rlsdk")
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_copybutton",
    "rlsdk_docs",  # _ext/rlsdk_docs.py: the generated hook and CLI references
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples", "Thumbs.db", ".DS_Store"]
# No intersphinx: the build must work offline. Links to other projects' objects are in nitpick_ignore.
nitpicky = True

# -- Autodoc and napoleon (Google style only; types live in the annotations) --------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True}
# A method without a docstring shows none, not object.__call__'s "Call self as a function."
autodoc_inherit_docstrings = False
# Hook signatures show the alias, not its expansion ``Callable[[str, Callable[..., Any]], None]``.
autodoc_type_aliases = {"Register": "rlsdk.hookspecs.Register"}
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# Attribute types are in the dataclass signatures; napoleon would repeat them as unparsed fields.
napoleon_attr_annotations = False

# -- MyST (the guides are GitHub-flavoured Markdown) -------------------------------------------------

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- HTML --------------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"rlsdk {release}"
copybutton_prompt_text = r"\$ |>>> |\.\.\. "
copybutton_prompt_is_regexp = True

# -- Cross-references nothing local can resolve -------------------------------------------------------
# Without intersphinx (offline build), objects of other projects have no target. Each entry says why.

nitpick_ignore_regex = [
    (r"py:.*", r"torch(\..*)?"),  # torch's API lives in torch's docs (Tensor, Generator, nn.Module, ...)
    (r"py:.*", r"Tensor"),  # torch.Tensor, imported as `from torch import Tensor` in annotations
    (r"py:.*", r"pluggy\..*"),  # pluggy's PluginManager, HookRelay, HookimplMarker
    (r"py:.*", r"(pathlib\.)?Path"),  # the standard library (no local Python inventory)
    (r"py:.*", r"(types\.)?ModuleType"),
    (r"py:.*", r"argparse\..*"),
    (r"py:.*", r"collections\.abc\..*"),
    (r"py:.*", r"(numpy|np)(\..*)?"),  # numpy's ndarray, Generator, ...
]
