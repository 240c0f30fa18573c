"""Sphinx configuration of the cowboy_ws documentation (built by docs/build.sh)."""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.dirname(HERE))  # the repository root: the docs describe this checkout

import cowboy_ws  # noqa: E402

project = "cowboy_ws"
author = "the cowboy_ws authors"
copyright = "the cowboy_ws authors"
release = version = cowboy_ws.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "cowboy_docs",  # docs/_ext/cowboy_docs.py: the CLI help and the options table, generated
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "build.sh", "README.md", "**/__pycache__"]
templates_path: list[str] = []

# Markdown pages (docs/design.md and docs/deployment.md are pages as they are).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # "[...](deployment.md#behind-nginx)" links to a heading

# The reference: autodoc reads the docstrings of the package as imported from this checkout.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"undoc-members": False}
add_module_names = False
python_use_unqualified_type_names = True

# No network at build time (no intersphinx): names of the standard library and of third-party
# packages in signatures are left as text.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:(class|exc|obj|data)", r"(ssl|socket|argparse|threading|selectors|collections\.abc|typing|types)\..*"),
    # cowboy_ws.protocol.deflate.DeflateOptions names the client side's offer builder, not part of this reference
    ("py:func", "client_offer"),
    # Modules of the runtime's insides that the reference does not document (or documents only the names
    # it points to): a docstring of the public API may name them without breaking the build.  A reference
    # to anything else that is not documented (a renamed function of the API, a typo) is an error.
    (r"py:.*", r"cowboy_ws\.(loop|http|websocket|lifecycle|sendbuffer|outframes|memory|metrics|_backendinfo"
               r"|messaging|redis_backend|bus_codec)(\..*)?"),
]

html_theme = "furo"
html_title = f"cowboy_ws {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
