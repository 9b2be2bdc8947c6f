r"""A graceful stop: SIGTERM or Ctrl-C ends a run at the next safe point, with its work kept.

Schedulers (Slurm, Kubernetes, spot instances) send SIGTERM and wait a grace period before
they kill. Inside :class:`GracefulStop`, the first SIGTERM or SIGINT only records the request;
training finishes its step, writes a mid-epoch checkpoint and raises :class:`Interrupted`, and
evaluation keeps its finished stages. A second signal ends the process at once (Ctrl-C twice).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["GracefulStop", "Interrupted", "check_stop", "stop_requested"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal after it kept its work (a ``KeyboardInterrupt``, so that
    ``except Exception`` does not swallow it).

    Attributes:
        signum: the signal's number (``signal.SIGTERM`` or ``signal.SIGINT``).
        kept: what was kept, e.g. ``"runs/x/vae.ckpt (epoch 3, step 120 of 469)"``.
    """

    def __init__(self, signum: int, kept: str) -> None:
        self.signum, self.kept = signum, kept
        super().__init__(f"stopped by {signal.Signals(signum).name}; kept {kept}")


class GracefulStop:
    """Within the block, SIGTERM and SIGINT ask for a stop instead of ending the process.

    Outside the main thread (where Python cannot handle signals) it does nothing, a signal that
    is ignored (SIGINT in a ``nohup`` job) stays ignored, and nested, the outer one stays in
    charge. The handlers in place before are put back on exit.

    Example:
        >>> import os
        >>> with GracefulStop() as stop:
        ...     os.kill(os.getpid(), signal.SIGTERM)
        ...     stop.requested == signal.SIGTERM
        True
    """

    _active: GracefulStop | None = None

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if GracefulStop._active is not None:
            return GracefulStop._active
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                if signal.getsignal(signum) is signal.SIG_IGN:  # e.g. SIGINT under nohup: kept
                    continue
                self._previous[signum] = signal.signal(signum, self._handle)
            GracefulStop._active = self
        return self

    def __exit__(self, *exc_info) -> None:
        if GracefulStop._active is self:
            self._restore()
            GracefulStop._active = None

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:  # the second signal: at once, as without us
            self._restore()
            signal.raise_signal(signum)
            return
        self.requested = signum


def stop_requested() -> int | None:
    """The signal that asked the active :class:`GracefulStop` to stop, if one has."""
    return None if GracefulStop._active is None else GracefulStop._active.requested


def check_stop(kept: str) -> None:
    """Raise :class:`Interrupted` if a stop was asked for (``kept``: what the caller kept)."""
    signum = stop_requested()
    if signum is not None:
        raise Interrupted(signum, kept)
