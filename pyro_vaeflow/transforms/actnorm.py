r"""Glow's activation normalisation (actnorm) for images."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import constraints

from pyro_vaeflow.distributed import mean_and_std
from pyro_vaeflow.transforms.base import Flow
from pyro_vaeflow.transforms.shapes import check_image, with_channels

__all__ = ["ActNorm2d"]


class ActNorm2d(Flow):
    r"""A per-channel affine map with Glow's data-dependent initialisation.

    For an image :math:`u \in \mathbb{R}^{C \times H \times W}` (base) and
    :math:`x` (data),

    .. math:: x_{c,i,j} = u_{c,i,j}\, e^{s_c} + b_c, \qquad
              \log\left|\det \frac{\partial x}{\partial u}\right| = H W \sum_c s_c .

    With ``init="data"``, the first batch seen in either direction sets :math:`b` and :math:`s`
    so that the activations on the base side of the layer have zero mean and unit variance per
    channel on that batch: :math:`b_c` and :math:`e^{s_c}` are the mean and the standard deviation
    of the data-side activations (when the first call goes data → base, as in ``log_prob``), or
    the reverse map standardises the data side (when the first call goes base → data).
    Channels whose standard deviation is below ``eps`` keep a unit scale, so a constant channel
    gives finite values. The ``initialized`` buffer is saved in the ``state_dict``, so a loaded
    model never initialises again. Reading it is a device synchronisation on a GPU, so it is read
    only until it has been seen true (:meth:`pending_initialization`); loading a state dict
    reads it again. With ``init="identity"`` the layer starts as the identity.
    Under a :mod:`torch.distributed` process group the statistics are those of every rank's
    first batch together (:func:`~pyro_vaeflow.distributed.mean_and_std`), so all ranks
    initialise identically; they must then make that first call together.

    Args:
        channels: the number of channels :math:`C`.
        init: ``"data"`` (Glow's) or ``"identity"``.
        eps: the smallest standard deviation that is normalised.
        cache_size: see :class:`~pyro_vaeflow.transforms.Flow`.

    Example:
        >>> norm = ActNorm2d(3)
        >>> u = norm.inv(5.0 + 2.0 * torch.randn(64, 3, 8, 8))
        >>> mean, std = u.mean(dim=(0, 2, 3)), u.std(dim=(0, 2, 3), unbiased=False)
        >>> torch.allclose(mean, torch.zeros(3), atol=1e-5), torch.allclose(std, torch.ones(3))
        (True, True)
    """

    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)

    def __init__(
        self, channels: int, init: str = "data", eps: float = 1e-6, cache_size: int = 1
    ) -> None:
        super().__init__(cache_size=cache_size)
        if init not in ("data", "identity"):
            raise ValueError(f'init must be "data" or "identity", got {init!r}')
        self.channels = channels
        self.eps = eps
        self.loc = nn.Parameter(torch.zeros(channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(init == "identity"))
        self._seen_initialized = False

    def pending_initialization(self) -> bool:
        """Whether the next call initialises the layer from its data.

        Once the ``initialized`` buffer has been seen true it is not read again (on a GPU each
        read waits for the queued kernels), until :meth:`load_state_dict` replaces it.
        """
        if not getattr(self, "_seen_initialized", False):  # absent in a module pickled before
            self._seen_initialized = bool(self.initialized)
        return not self._seen_initialized

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._seen_initialized = False
        super()._load_from_state_dict(*args, **kwargs)

    def _initialize(self, h: Tensor, data_side: bool) -> None:
        dims = [d for d in range(h.dim()) if d != h.dim() - 3]
        with torch.no_grad():
            mean, std = mean_and_std(h, dims)  # over every rank's batch, under a process group
            mean, std = mean.reshape(self.channels, 1, 1), std.reshape(self.channels, 1, 1)
            log_std = torch.where(std > self.eps, std.clamp_min(self.eps).log(), 0.0)
            if data_side:
                self.loc.copy_(mean)
                self.log_scale.copy_(log_std)
            else:
                self.log_scale.copy_(-log_std)
                self.loc.copy_(-mean * self.log_scale.exp())
            self.initialized.fill_(True)

    def _log_det(self, h: Tensor) -> Tensor:
        height, width = h.shape[-2:]
        return (height * width * self.log_scale.sum()).expand(h.shape[:-3])

    def forward_and_log_det(self, u: Tensor) -> tuple[Tensor, Tensor]:
        check_image(u, self.channels, type(self).__name__)
        if self.pending_initialization():
            self._initialize(u, data_side=False)
        return u * self.log_scale.exp() + self.loc, self._log_det(u)

    def inverse_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_image(x, self.channels, type(self).__name__)
        if self.pending_initialization():
            self._initialize(x, data_side=True)
        return (x - self.loc) * torch.exp(-self.log_scale), self._log_det(x)

    def expected_shape(self, shape: torch.Size) -> torch.Size:
        return with_channels(shape, self.channels)

    def extra_repr(self) -> str:
        return f"{self.channels}, initialized={bool(self.initialized)}"
