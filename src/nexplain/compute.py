"""Where a torch stage runs: the `compute:` config block resolved for one stage.

Every torch stage (training, extraction, VLM training and embeddings, relevance, ablation
and Top Impact tail replay, label masking) takes a `Compute`. On the CPU it changes
nothing: same code path, same bytes as before devices existed. On a GPU it moves the
model and each batch there, decodes images in DataLoader workers into pinned memory, and
runs inference under bf16 autocast where a stage opts in (`amp: true`).
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from dataclasses import dataclass

import torch

from nexplain.errors import ConfigError

DEVICES = "auto, cpu, cuda, cuda:N"
STAGES = ("train_model", "activations", "train_vlm", "vlm_embeddings", "relevance", "simulate",
          "top_impact", "label_masking")
_CUDA = re.compile(r"cuda(?::(\d+))?")


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Have this process's C allocator keep the memory that tensors free, for the next batch.

    By default glibc returns each big tensor's memory to the kernel as it is freed, so every
    batch faults in fresh zeroed pages: a ResNet forward on 2 CPU cores spent a third of its
    time so (300,000 page faults per 512 images). Blocks under `limit` then come from the
    heap and are mostly reused (none of those faults in the extraction benchmark); peak
    memory stays the peak of one batch. False where the C library
    is not glibc (nothing changes there).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


class DeviceError(ConfigError):
    """A device was asked for that this machine does not have."""


def resolve_device(name: str) -> torch.device:
    """'auto' is cuda when torch sees one, else cpu; cuda where there is none is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = _CUDA.fullmatch(name)
    if not m:
        raise DeviceError(f"unknown device {name!r}; valid: {DEVICES}")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but torch sees no CUDA device here "
                          f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
                          "use device: cpu or auto")
    index = int(m[1] or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} "
                          f"CUDA device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return torch.device(name)


def stage_settings(compute: dict | None, stage: str) -> dict:
    """One stage's settings from the `compute:` block: its own keys over the block's device."""
    compute = compute or {}
    own = (compute.get("stages") or {}).get(stage) or {}
    return {"device": own.get("device") or compute.get("device", "cpu"),
            "batch_size": own.get("batch_size"), "amp": bool(own.get("amp", False)),
            "loader_workers": int(compute.get("loader_workers", 0))}


@dataclass(frozen=True)
class Compute:
    """A resolved stage: where it runs, its inference batch size, and whether it autocasts."""

    device: torch.device = torch.device("cpu")
    batch_size: int | None = None
    amp: bool = False
    loader_workers: int = 0

    @classmethod
    def of(cls, settings: dict | None) -> Compute:
        """From `stage_settings` (what reaches a rule's params); None: the CPU, as before."""
        if not settings:
            return cls()
        return cls(resolve_device(settings["device"]), settings.get("batch_size"), bool(settings.get("amp")),
                   int(settings.get("loader_workers", 0)))

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """bf16 autocast for inference where the stage opted in; otherwise a no-op."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def to(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=self.cuda) if self.cuda else x

    def loader_options(self, cpu_workers: int = 0) -> dict:
        """DataLoader options: on a GPU, decode in workers into pinned memory so the GPU is not starved;
        on the CPU, what the stage always used (`cpu_workers`)."""
        if not self.cuda:
            return {"num_workers": cpu_workers}
        return {"num_workers": self.loader_workers, "pin_memory": True,
                "persistent_workers": False, "prefetch_factor": 4 if self.loader_workers else None}
