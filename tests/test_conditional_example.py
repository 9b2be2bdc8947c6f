"""The class-conditional example trains, scores and draws every class in a seconds-long run."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

from matplotlib.image import imread

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "conditional_fashion_mnist.py"


def load():
    spec = importlib.util.spec_from_file_location("examples.conditional_fashion_mnist", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run(tmp_path, capsys):
    example = load()
    args = example.parse_args(
        ["--smoke", "--quiet", "--per-class", "3", "--out-dir", str(tmp_path)]
    )
    result = example.main(args)
    out = capsys.readouterr().out
    printed = re.search(r"test bits/dim of p\(x \| y\): (\S+)", out)
    assert printed is not None, out
    assert math.isfinite(float(printed.group(1)))
    assert float(printed.group(1)) == round(result["test_bpd"], 4)
    # one row per class of 28 + 2 pixels, a column per sample, and the last padding
    per_class = example.SMOKE["per_class"]
    assert result["grid_shape"] == (3, 10 * 30 + 2, per_class * 30 + 2)
    assert result["figure"] == tmp_path / "samples_per_class.png"
    height, width = imread(result["figure"]).shape[:2]
    assert height > width > 0  # ten rows, two columns
