"""Whole runs on top of a :class:`~pyro_vaeflow.rundir.RunDir`: train a preset's model phase
after phase (:func:`train`), evaluate it (:func:`evaluate`, :func:`fid_scores`) and report it
(:func:`make_figures`, :func:`summary_table`). What ``pyro-vaeflow`` and
``examples/fashion_mnist.py`` call."""

from pyro_vaeflow.run.evaluation import evaluate, fid_scores
from pyro_vaeflow.run.report import make_figures, summary_table
from pyro_vaeflow.run.training import schedule, train

__all__ = [
    "evaluate",
    "fid_scores",
    "make_figures",
    "schedule",
    "summary_table",
    "train",
]
