"""Sphinx configuration for pyro_vaeflow (``make docs``)."""

import sys
from pathlib import Path

import pyro_vaeflow

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "pyro_vaeflow"
author = "the pyro_vaeflow developers"
copyright = "the pyro_vaeflow developers"
release = pyro_vaeflow.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "apigen",
]

# The public modules whose ``__all__`` the API pages are generated from (see _ext/apigen.py).
# A new public module needs only to be added here.
apigen_modules = [
    "pyro_vaeflow",
    "pyro_vaeflow.transforms",
    "pyro_vaeflow.distributions",
    "pyro_vaeflow.nets",
    "pyro_vaeflow.models",
    "pyro_vaeflow.infer",
    "pyro_vaeflow.data",
    "pyro_vaeflow.training",
    "pyro_vaeflow.metrics",
    "pyro_vaeflow.plotting",
    "pyro_vaeflow.presets",
    "pyro_vaeflow.rundir",
    "pyro_vaeflow.distributed",
    "pyro_vaeflow.acceleration",
    "pyro_vaeflow.run",
    "pyro_vaeflow.checkpoint",
    "pyro_vaeflow.lock",
    "pyro_vaeflow.interrupt",
    "pyro_vaeflow.files",
    "pyro_vaeflow.faults",
    "pyro_vaeflow.validation",
    "pyro_vaeflow.cli",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "_ext", "_templates"]

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# A method without its own docstring is left out rather than shown with torch's.
autodoc_inherit_docstrings = False

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Attributes:" become a field list, so a class whose attributes autodoc also documents (a
# NamedTuple, say) does not describe them twice.
napoleon_use_ivar = True

html_theme = "alabaster"
html_title = f"pyro_vaeflow {release}"
