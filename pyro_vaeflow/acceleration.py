r"""Compiled networks, bf16 mixed precision and TF32: the networks fast, the bookkeeping exact.

Three switches, each opt-in except TF32 on CUDA:

* :func:`accelerate` ``(compile=True)`` compiles, with :func:`torch.compile`, the networks that
  carry the FLOPs (:data:`COMPILED_NETWORKS`: the Glow conditioners, the ResNet encoder and
  decoder, the Real NVP prior's and VLAE's MLPs, the PixelCNN). Pyro's tracing, the flows'
  bookkeeping (caches, ActNorm's initialisation, log-determinants) and the distributions stay
  eager, so every Pyro feature keeps working. Each network is compiled in place
  (:meth:`torch.nn.Module.compile`): its state-dict keys, checkpoints and ``model.pt`` do not
  change. Where compiling is not available (no C++ compiler for the CPU, an unsupported
  Python), a warning says why and the networks run eagerly.
* :func:`accelerate` ``(precision="bf16")`` runs the layers of the networks that are
  :class:`~pyro_vaeflow.nets.precision.MixedPrecision` (the Glow conditioners, the ResNet
  encoder and decoder) under a bfloat16 autocast and returns their outputs in float32. The
  flows' affine arithmetic, the log-determinants, the Gaussian log-densities and the ELBO stay
  float32.
* :func:`set_tf32` lets CUDA's float32 matrix products and convolutions use TF32 (10-bit
  mantissas, float32 range); training on CUDA turns it on unless told otherwise, and sets it
  back after (:meth:`Acceleration.tf32_on`).

:func:`save_compile_cache` and :func:`load_compile_cache` keep the compiled kernels in a file
(``<run_dir>/compile-cache.bin``), so that a resumed run does not compile them again. The file
holds compiled code that a resumed run executes: resume with ``--compile`` only run directories
you trust, as with any pickle.

Example:
    >>> from pyro_vaeflow.models import VAEFlow
    >>> vae = VAEFlow((1, 8, 8), latent_dim=2, depth=1, base_channels=4, fc_dim=8,
    ...               prior_layers=2, prior_hidden_dims=(8,), glow_depth=1,
    ...               glow_hidden_channels=8)
    >>> vae = accelerate(vae, precision="bf16")
    >>> vae.encoder.compute_dtype
    torch.bfloat16
    >>> vae.encoder(torch.rand(3, 1, 8, 8))[0].dtype
    torch.float32
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from pyro.nn import AutoRegressiveNN, DenseNN
from torch import nn

from pyro_vaeflow.files import atomic_write
from pyro_vaeflow.nets.pixelcnn import PixelCNN
from pyro_vaeflow.nets.precision import MixedPrecision
from pyro_vaeflow.nets.resnet import ResNetDecoder, ResNetEncoder
from pyro_vaeflow.transforms.coupling import GlowConditioner
from pyro_vaeflow.validation import check_choice

__all__ = [
    "COMPILED_NETWORKS",
    "PRECISIONS",
    "Acceleration",
    "accelerate",
    "compile_unavailable",
    "device_of",
    "load_compile_cache",
    "networks",
    "save_compile_cache",
    "set_tf32",
]

#: The precisions of :func:`accelerate` and the dtype of their networks' arithmetic.
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}

#: The networks that ``accelerate(compile=True)`` compiles (the outermost, not their layers).
COMPILED_NETWORKS: tuple[type[nn.Module], ...] = (
    GlowConditioner,
    ResNetEncoder,
    ResNetDecoder,
    DenseNN,
    AutoRegressiveNN,
    PixelCNN,
)


def networks(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The outermost :data:`COMPILED_NETWORKS` in ``model`` (itself included), with their names.

    Example:
        >>> from pyro_vaeflow.transforms import realnvp
        >>> [name for name, _ in networks(realnvp(4, num_layers=2, hidden_dims=(8,)))]
        ['parts.0.net', 'parts.1.net']
    """
    if isinstance(model, COMPILED_NETWORKS):
        yield "", model
        return
    for name, child in model.named_children():
        for inner, network in networks(child):
            yield (f"{name}.{inner}" if inner else name), network


@functools.cache
def _probe(device_type: str, backend: str) -> str | None:
    # Compiles and runs a two-op function once per process: the reason compiling fails, or None.
    try:
        compiled = torch.compile(lambda x: torch.relu(x) * 2 + 1, backend=backend, dynamic=False)
        value = compiled(torch.ones(2, device=device_type))
    except Exception as error:  # any failure means "run eagerly", with its reason
        first_line = (str(error).strip().splitlines() or [""])[0]
        return f"{type(error).__name__}: {first_line}"[:300]
    if not torch.equal(value.cpu(), torch.full((2,), 3.0)):
        return "a compiled test function computed a wrong value"
    return None


def compile_unavailable(
    device: str | torch.device = "cpu", backend: str = "inductor"
) -> str | None:
    """Why :func:`torch.compile` cannot run on ``device`` here, or ``None`` where it can.

    The answer comes from compiling and running a two-operation function once per process
    (a few seconds the first time).

    Example:
        >>> compile_unavailable("cpu", backend="no-such-backend") is not None
        True
    """
    return _probe(torch.device(device).type, backend)


def device_of(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer (the CPU if it has none).

    Example:
        >>> device_of(nn.Linear(2, 2)), device_of(nn.ReLU())
        (device(type='cpu'), device(type='cpu'))
    """
    tensor = next(iter(module.state_dict().values()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def accelerate(
    model: nn.Module,
    compile: bool = False,
    precision: str = "fp32",
    *,
    compile_mode: str | None = None,
    backend: str = "inductor",
) -> nn.Module:
    r"""Compiles ``model``'s networks and sets their precision, in place; returns ``model``.

    See the module's documentation for what changes and what stays exact. Call it after the
    model is on its device. ``precision="fp32"`` sets the networks back to float32;
    ``compile=False`` leaves networks compiled before as they are.

    Args:
        model: any module, e.g. an :class:`~pyro_vaeflow.models.ImageModel`.
        compile: compile :func:`networks` with :meth:`torch.nn.Module.compile`; where compiling
            is not available (:func:`compile_unavailable`) a ``RuntimeWarning`` says why and
            they stay eager.
        precision: ``"fp32"`` or ``"bf16"`` (:data:`PRECISIONS`), the arithmetic of the
            :class:`~pyro_vaeflow.nets.precision.MixedPrecision` networks.
        compile_mode: :func:`torch.compile`'s ``mode``, e.g. ``"reduce-overhead"`` (CUDA graphs)
            or ``"max-autotune"``; ``None``: its default.
        backend: :func:`torch.compile`'s backend.

    Returns:
        ``model``.

    Raises:
        ValueError: on an unknown precision.

    Example:
        >>> from pyro_vaeflow.transforms import realnvp
        >>> flow = accelerate(realnvp(4, num_layers=2, hidden_dims=(8,)), compile=True,
        ...                   backend="no-such-backend")  # doctest: +SKIP
        RuntimeWarning: torch.compile is not available here (...); the networks run eagerly
    """
    check_choice("precision", precision, tuple(PRECISIONS))
    for module in model.modules():
        if isinstance(module, MixedPrecision):
            module.compute_dtype = PRECISIONS[precision]
    if compile:
        reason = compile_unavailable(device_of(model), backend)
        if reason is not None:
            warnings.warn(
                f"torch.compile is not available here ({reason}); the networks run eagerly",
                RuntimeWarning,
                stacklevel=2,
            )
            return model
        for _, network in networks(model):
            network.compile(backend=backend, mode=compile_mode)
    return model


def set_tf32(enabled: bool = True) -> None:
    """Lets CUDA's float32 matrix products and cuDNN's convolutions use TF32, or not.

    A process-wide setting (``torch.backends.cuda.matmul.allow_tf32`` and
    ``torch.backends.cudnn.allow_tf32``); it does not change CPU arithmetic.

    Example:
        >>> set_tf32(False); torch.backends.cuda.matmul.allow_tf32
        False
    """
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


@dataclass(frozen=True)
class Acceleration:
    """How a run computes: what :func:`~pyro_vaeflow.run.train` and the CLI's ``train`` apply.

    Attributes:
        compile: compile the networks (``--compile``), see :func:`accelerate`.
        precision: ``"fp32"`` or ``"bf16"`` (``--precision``), see :func:`accelerate`.
        tf32: on CUDA, let float32 products use TF32 (``--no-tf32`` turns it off), see
            :func:`set_tf32`.
        compile_mode: :func:`torch.compile`'s ``mode`` (``--compile-mode``).

    Example:
        >>> Acceleration(precision="bf16").precision
        'bf16'
    """

    compile: bool = False
    precision: str = "fp32"
    tf32: bool = True
    compile_mode: str | None = None

    def __post_init__(self) -> None:
        check_choice("precision", self.precision, tuple(PRECISIONS))

    def apply(self, model: nn.Module) -> nn.Module:
        """:func:`accelerate` ``model`` with these settings; returns it."""
        return accelerate(model, self.compile, self.precision, compile_mode=self.compile_mode)

    @contextmanager
    def tf32_on(self, device: str | torch.device) -> Iterator[None]:
        """TF32 as :attr:`tf32` says on a CUDA ``device``, for the block; the previous setting
        after it. Nothing on other devices."""
        if torch.device(device).type != "cuda":
            yield
            return
        previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        set_tf32(self.tf32)
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def save_compile_cache(path: str | os.PathLike) -> bool:
    """Writes the kernels compiled so far in this process to ``path``; whether there were any.

    :func:`torch.compiler.save_cache_artifacts` (torch ≥ 2.7; earlier versions keep only their
    own cache, in the temporary folder, and this returns ``False``).
    """
    save = getattr(torch.compiler, "save_cache_artifacts", None)
    artifacts = save() if save is not None else None
    if artifacts is None:
        return False
    atomic_write(path, lambda file: file.write(artifacts[0]))
    return True


def load_compile_cache(path: str | os.PathLike) -> bool:
    """Loads kernels that :func:`save_compile_cache` wrote, if ``path`` exists; whether it did.

    An unreadable file is reported with a warning and ignored: the kernels are compiled again.
    """
    load = getattr(torch.compiler, "load_cache_artifacts", None)
    path = Path(path)
    if load is None or not path.is_file():
        return False
    try:
        loaded = load(path.read_bytes())  # None, with torch's own log line, for a corrupt file
    except Exception as error:  # a stale cache only costs the compile time
        loaded, why = None, repr(error)
    else:
        why = "unreadable or from another torch"
    if loaded is None:
        warnings.warn(f"{path}: compile cache not loaded ({why}); compiling again", stacklevel=2)
        return False
    return True
