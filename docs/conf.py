"""Sphinx configuration of the bifnet documentation (Markdown via myst-parser)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import bifnet  # noqa: E402

project = "bifnet"
author = "bifnet contributors"
copyright = "2025, bifnet contributors"
release = bifnet.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "numpydoc",
    "sphinx.ext.mathjax",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"

html_theme = "alabaster"
html_title = "bifnet"


