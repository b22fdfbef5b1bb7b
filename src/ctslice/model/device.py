"""One device vocabulary for train, evaluate and predict, and one resolver.

    device = resolve_device("auto")                  # the GPU when there is one, else the CPU
    device = resolve_device("cuda", local_rank=3)    # under torchrun: this process's GPU

Names (the rule `config.DEVICE`, which every config section with a device checks): auto, cpu, cuda, cuda:N, mps.
"""

from __future__ import annotations

import torch

from ..errors import CtsliceError


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The torch device `name` means here: 'auto' is CUDA when available, else the CPU; 'cuda' (and 'auto' on a
    GPU) with `local_rank` is that GPU (LOCAL_RANK under torchrun), without it the current one. A device asked
    for but absent is a CtsliceError, never a silent fallback to the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CtsliceError(f"device {name} asked for, but no CUDA GPU is available")
        if name == "cuda" and local_rank is not None:
            return torch.device("cuda", local_rank)
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise CtsliceError(f"device {name} asked for, but this machine has {torch.cuda.device_count()} "
                               f"CUDA GPU(s)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise CtsliceError("device mps asked for, but no Apple GPU (MPS) is available")
    return torch.device(name)
