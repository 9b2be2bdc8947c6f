"""The installation gives a working torchvision and a single source of the version."""

import re
from pathlib import Path

import torch
import torchvision

import pyro_vaeflow


def test_torchvision_operators_are_registered():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.1]])
    keep = torchvision.ops.nms(boxes, torch.tensor([1.0, 0.5]), iou_threshold=0.5)
    assert keep.tolist() == [0]


def test_version_is_defined_once():
    setup_cfg = (Path(__file__).resolve().parents[1] / "setup.cfg").read_text()
    assert "version = attr: pyro_vaeflow.__version__" in setup_cfg
    assert re.fullmatch(r"\d+\.\d+\.\d+", pyro_vaeflow.__version__)
