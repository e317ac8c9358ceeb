"""What every model backend shares: the error a model that can't be built raises, and devices."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    import torch


DEVICES = ("auto", "cpu", "cuda", "mps")  # --device: auto picks cuda, then mps, then cpu
UNTRAINED = "none"  # --checkpoint none: untrained weights, for tests


class ModelError(UsageError):
    """A model that can't be built: missing, corrupt or mismatched checkpoint, unknown device."""


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device must be available."""
    import torch  # here, not at the top: the command line answers argument errors without torch (3 s)

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda or name == "mps" and not mps:
        raise ModelError(f"--device {name}: not available on this machine (try --device auto)")
    if name not in ("cpu", "cuda", "mps"):
        raise ModelError(f"--device {name}: unknown device (auto, cpu, cuda or mps)")
    return torch.device(name)
