r"""What every model class shares, and what it declares for training and evaluation.

A model is a Pyro ``model``/``guide`` pair over images ``N×C×H×W`` in [0, 1]. Subclassing
:class:`ImageModel` gives it the input checks, its ``config`` (the constructor's arguments,
recorded once), :meth:`~ImageModel.save`/:meth:`~ImageModel.load`, and default declarations
that the training engine and the run layer read instead of knowing the class:

* :attr:`~ImageModel.phases`: the training phases (:class:`Phase`) by name, and
  :attr:`~ImageModel.default_schedule`, their default order;
* :attr:`~ImageModel.n_bits`: the bit depth of the observed pixels;
* :meth:`~ImageModel.fid_samplers` and :meth:`~ImageModel.figures`: how it samples for FID and
  for the figures;
* :meth:`~ImageModel.elbo_variants`: the same bound with parts of the model switched off.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, TypeVar

import pyro
import torch
from torch import Tensor, nn

from pyro_vaeflow.acceleration import accelerate
from pyro_vaeflow.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyro_vaeflow.validation import check_image_shape, check_images

__all__ = ["ImageModel", "Phase", "Sampler", "Variant", "sample_options", "switched_off"]

Model = TypeVar("Model", bound="ImageModel")


@dataclass(frozen=True)
class Phase:
    """One training phase of a model: what it trains and what it switches off.

    Attributes:
        trains: the names of the child modules the phase trains; every other child is frozen
            (``()``: every child).
        switches_off: boolean attributes of the model set to ``False`` during the phase (for
            example a stage of the model that the phase trains without).
        patience: early stopping on a validation split by default: stop after this many epochs
            without a better validation bits/dim (``None``: no early stopping).
        description: one line on what the phase is for.
        needs: what a model must have for the phase to train anything, for the error message
            when it has none of the parts in ``trains``.

    Example:
        >>> Phase(trains=("glow",), description="only the Glow layer").trains
        ('glow',)
    """

    trains: tuple[str, ...] = ()
    switches_off: tuple[str, ...] = ()
    patience: int | None = None
    description: str = ""
    needs: str = ""

    def parts(self, model: nn.Module) -> list[str]:
        """The children of ``model`` that the phase trains (those that exist)."""
        children = dict(model.named_children())
        return [name for name in self.trains or children if children.get(name) is not None]


@dataclass(frozen=True)
class Sampler:
    """A source of samples scored by FID: ``draw(count)`` returns the next ``count`` images.

    Attributes:
        label: what the samples are, for the summary table (e.g. ``"FID of Glow samples"``).
        draw: the function.
        uses_temperature: whether the samples depend on the sampling temperature (then the
            evaluation records it beside the FID).
    """

    label: str
    draw: Callable[[int], Tensor]
    uses_temperature: bool = False


@dataclass(frozen=True)
class Variant:
    """The model's bound with some of its switches off, reported beside the full bound.

    Attributes:
        label: the row of the summary table.
        switches_off: boolean attributes of the model set to ``False`` for this bound.
    """

    label: str
    switches_off: tuple[str, ...]


@contextmanager
def switched_off(model: nn.Module, flags: tuple[str, ...]) -> Iterator[None]:
    """Set the boolean attributes ``flags`` of ``model`` to ``False``; restore them on exit.

    Example:
        >>> module = torch.nn.Module()
        >>> module.stage_enabled = True
        >>> with switched_off(module, ("stage_enabled",)):
        ...     module.stage_enabled
        False
        >>> module.stage_enabled
        True
    """
    missing = [flag for flag in flags if not isinstance(getattr(model, flag, None), bool)]
    if missing:
        raise AttributeError(f"{type(model).__name__} has no boolean switch {missing}")
    saved = {flag: getattr(model, flag) for flag in flags}
    try:
        for flag in flags:
            setattr(model, flag, False)
        yield
    finally:
        for flag, value in saved.items():
            setattr(model, flag, value)


def sample_options(model: nn.Module, **options) -> dict:
    """The ``options`` that ``model.sample`` accepts (temperatures, ``progress``, ...).

    Models differ in how they sample: a ``VAEFlow`` takes a Glow and a prior temperature, the
    standalone Glow one temperature, the PixelCNN models a progress bar.

    Example:
        >>> class Model(torch.nn.Module):
        ...     def sample(self, n, temperature=0.5): ...
        >>> sample_options(Model(), temperature=0.7, progress=False)
        {'temperature': 0.7}
    """
    accepted = inspect.signature(model.sample).parameters
    return {name: value for name, value in options.items() if name in accepted}


def _recording_config(cls: type, init: Callable) -> Callable:
    """Wrap the constructor of ``cls`` so that it records its arguments as ``config`` when
    ``cls`` is the class being built (not a base whose constructor a subclass calls)."""
    signature = inspect.signature(init)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()):
        raise TypeError(
            f"{cls.__name__}.__init__ takes *args, so its arguments cannot be recorded as a "
            "config to rebuild it from: name them, or take **kwargs"
        )

    @functools.wraps(init)
    def recording_init(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        if type(self) is cls:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            self.config = {"image_shape": self.image_shape, **_plain_config(bound, signature)}

    return recording_init


def _plain_config(bound: inspect.BoundArguments, signature: inspect.Signature) -> dict:
    """The bound arguments as plain data: ``**kwargs`` flattened, lists as tuples, and custom
    networks (modules) left out, since :meth:`ImageModel.load` cannot rebuild them."""
    config: dict = {}
    for name, value in list(bound.arguments.items())[1:]:  # without self
        if name == "image_shape":  # recorded as the validated tuple
            continue
        kind = signature.parameters[name].kind
        config.update(value if kind is inspect.Parameter.VAR_KEYWORD else {name: value})
    return {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in config.items()
        if not isinstance(value, nn.Module)
    }


class ImageModel(nn.Module):
    """The base of the image models.

    A subclass calls ``super().__init__(image_shape)`` (which validates it), sets its class
    attribute ``architecture`` (its name in :data:`~pyro_vaeflow.models.ARCHITECTURES`) and
    defines ``model`` and ``guide``. Its trainable parts are child modules, which phases
    freeze or train and which :meth:`_register` registers with Pyro. Its constructor's
    arguments are recorded as :attr:`config` when the constructor returns, so that
    :meth:`load` can rebuild it; the subclass writes nothing for that.

    The class attributes :attr:`phases` and :attr:`default_schedule` declare how it trains
    (by default one phase, ``"all"``, that trains every part); :attr:`n_bits`,
    :meth:`fid_samplers`, :meth:`figures` and :meth:`elbo_variants` how it is evaluated.

    Example:
        >>> import pyro.distributions as dist
        >>> class Pixels(ImageModel):
        ...     architecture = "pixels"
        ...     def __init__(self, image_shape, scale=0.1):
        ...         super().__init__(image_shape)
        ...         self.mean = torch.nn.Conv2d(self.image_shape[0], self.image_shape[0], 1)
        ...         self.scale = scale
        ...     def model(self, x):
        ...         self.check_images(x)
        ...         self._register()  # the trainable parts are child modules
        ...         with pyro.plate("data", x.shape[0]):
        ...             loc = self.mean(torch.zeros_like(x))
        ...             pyro.sample("x", dist.Normal(loc, self.scale).to_event(3), obs=x)
        ...     def guide(self, x):
        ...         pass
        >>> Pixels((1, 4, 4)).config
        {'image_shape': (1, 4, 4), 'scale': 0.1}
    """

    architecture: ClassVar[str]
    phases: ClassVar[Mapping[str, Phase]] = MappingProxyType(
        {"all": Phase(description="every part of the model")}
    )
    """The training phases by name."""
    default_schedule: ClassVar[tuple[str, ...]] = ("all",)
    """The phases a full training runs, in order."""
    n_bits: int = 8
    """The bit depth of the observed pixels (for bits/dim)."""
    image_shape: tuple[int, int, int]
    config: dict

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.__init__ = _recording_config(cls, cls.__init__)  # its own, or the one it inherits

    def __init__(self, image_shape) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)

    # -- inputs and Pyro -------------------------------------------------------------------------

    def check_images(self, x: Tensor) -> None:
        """Raise a ``ValueError`` naming the problem unless ``x`` is ``N×C×H×W`` in [0, 1]."""
        check_images(x, self.image_shape)

    def _register(self, *names: str) -> None:
        """``pyro.module`` each named child (every child by default) that has trainable
        parameters, so that SVI optimises them; a model and a guide each register what they use.
        """
        children = dict(self.named_children())
        for name in names or children:
            if not hasattr(self, name):
                raise AttributeError(f"{type(self).__name__} has no part {name!r} to register")
            module = children.get(name)
            if module is not None and any(p.requires_grad for p in module.parameters()):
                pyro.module(name, module)

    def _zeros(self, *shape: int) -> Tensor:
        """Zeros of ``shape`` in the dtype and on the device of the parameters."""
        reference = next(self.parameters())
        return torch.zeros(*shape, dtype=reference.dtype, device=reference.device)

    @property
    def num_dims(self) -> int:
        """The number of pixels times channels, :math:`D = CHW`."""
        return math.prod(self.image_shape)

    # -- evaluation declarations -----------------------------------------------------------------

    def fid_samplers(self, n: int, temperature: float, main_only: bool = False) -> dict:
        """The samples FID scores, as ``{metric name: Sampler}``; ``"fid"`` comes first.

        By default ``"fid"`` scores :meth:`sample` (given ``temperature`` if it takes one).
        A model may add samplers for comparison (``main_only`` leaves them out). ``n`` is the
        number of samples each will be asked for in all.
        """
        options = sample_options(self, temperature=temperature, progress=False)

        def draw(count: int) -> Tensor:
            return self.sample(count, **options)

        return {"fid": Sampler("FID of samples", draw, "temperature" in options)}

    def figures(self) -> dict[str, str]:
        """The figures of a run: file name → a figure of ``pyro_vaeflow.plotting.FIGURES``."""
        return {"samples": "sample_grid"}

    def elbo_variants(self) -> dict[str, Variant]:
        """Bounds reported beside the full ELBO, by name (none by default)."""
        return {}

    def accelerate(self, compile: bool = False, precision: str = "fp32", **options) -> ImageModel:
        """Compiles the networks and sets their precision, in place; returns the model.

        :func:`pyro_vaeflow.acceleration.accelerate` (``options``: ``compile_mode``,
        ``backend``): the weights, the state dict and :meth:`save` do not change.

        Example:
            >>> from pyro_vaeflow.models import VAEFlow
            >>> vae = VAEFlow((1, 8, 8), 2, depth=1, base_channels=2, fc_dim=8, prior_layers=1,
            ...               prior_hidden_dims=(8,), glow_depth=1, glow_hidden_channels=4)
            >>> vae.accelerate(precision="bf16").decoder.compute_dtype
            torch.bfloat16
        """
        return accelerate(self, compile, precision, **options)

    # -- persistence -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Save the configuration and weights atomically, readable with ``weights_only=True``.

        A model built with custom networks must be rebuilt by hand and given the weights with
        ``load_state_dict``; :meth:`load` rebuilds the default networks.
        """
        payload = {
            "kind": "model",
            "architecture": self.architecture,
            "config": self.config,
            "model": self.state_dict(),
            "switches": {flag: bool(getattr(self, flag)) for flag in self.switches()},
        }
        return save_checkpoint(payload, path)

    def switches(self) -> tuple[str, ...]:
        """The model's boolean switches: those its phases and ELBO variants turn off (a
        ``VAEFlow``'s ``glow_enabled``). :meth:`save` keeps their values, :meth:`load` restores
        them."""
        declared = [*self.phases.values(), *self.elbo_variants().values()]
        return tuple(sorted({flag for part in declared for flag in part.switches_off}))

    @classmethod
    def upgrade_state_dict(cls, state: dict) -> dict:
        """The weights of a file written by an older version, in this version's layout."""
        return state

    @classmethod
    def load(
        cls: type[Model], path: str | os.PathLike, map_location: str | torch.device = "cpu"
    ) -> Model:
        """Load a model written by :meth:`save` (or a training checkpoint of ``fit``).

        Files holding arbitrary Python objects are refused before any of their code runs;
        corrupt or foreign files, and files of another model class, raise
        :class:`~pyro_vaeflow.checkpoint.CheckpointError`.
        """
        payload = load_checkpoint(path)
        if "config" not in payload or "model" not in payload:
            raise CheckpointError(f"{path} holds no model (kind {payload['kind']!r})")
        architecture = payload.get("architecture", "vaeflow")  # files before there were others
        if architecture != cls.architecture:
            raise CheckpointError(
                f"{path} holds a {architecture!r} model, not a {cls.__name__}; load it with "
                "pyro_vaeflow.models.load_model"
            )
        config = dict(payload["config"])
        try:
            model = cls(config.pop("image_shape"), **config)
        except TypeError as error:
            raise CheckpointError(f"{path} is not a {cls.__name__} ({error})") from None
        try:
            model.load_state_dict(cls.upgrade_state_dict(payload["model"]))
        except RuntimeError as error:
            raise CheckpointError(f"{path}: the weights do not fit the model ({error})") from None
        for flag, value in payload.get("switches", {}).items():  # older files have none
            if flag not in model.switches() or not isinstance(value, bool):
                raise CheckpointError(f"{path}: {cls.__name__} has no switch {flag!r}")
            setattr(model, flag, value)
        return model.to(map_location)
