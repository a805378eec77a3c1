"""Sphinx configuration of the bifnet documentation (Markdown via myst-parser)."""

import os
import sys
import warnings

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


# The docstring of bifnet.analysis.lyapunov.lyapunov_spectrum still uses the
# heading "Example"; numpydoc knows only "Examples" and would drop the section
# with a warning. Rename it before numpydoc parses the docstring (numpydoc
# listens with priority 500). Delete this hook once no docstring needs it:
#     grep -rn "^ *Example$" bifnet
def _examples_heading(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        if line.strip() == "Example" and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
            indent = line[: len(line) - len(line.lstrip())]
            lines[i] = indent + "Examples"
            lines[i + 1] = indent + "--------"


# numpydoc also reads the raw docstring when it mangles signatures and warns
# there about the same "Example" heading; the rendered text is fixed above.
warnings.filterwarnings("ignore", message="Unknown section Example", category=UserWarning)


def setup(app):
    app.connect("autodoc-process-docstring", _examples_heading, priority=400)
