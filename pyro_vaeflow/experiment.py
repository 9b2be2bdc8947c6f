"""The former home of whole runs, kept as an alias of :mod:`pyro_vaeflow.run` (see the
changelog): ``from pyro_vaeflow.experiment import train, evaluate`` keeps working."""

from pyro_vaeflow.run import evaluate, fid_scores, make_figures, schedule, summary_table, train

__all__ = ["evaluate", "fid_scores", "make_figures", "schedule", "summary_table", "train"]
