"""The layers of a configured model, known before any job runs: no weights, no network.

`skeleton` builds the module a job would hook (`nexplain.models.load`) on torch's meta
device, where parameters have shapes but no memory, so even a ViT-H costs a tenth of a
second. `unknown_layer` resolves a name with `nexplain.activations.hooks.get_layer`, the very
call the extraction, relevance and replay jobs make, so it accepts exactly what they do.
"""

from __future__ import annotations

import difflib
import functools

import torch

from nexplain.activations.hooks import compact_names, get_layer, list_layers
from nexplain.errors import ModelError

_MAX_CHOICES = 24  # choices an error lists before it shortens


def skeleton(spec: dict) -> torch.nn.Module | None:
    """The module a job hooks for a `models:` entry, with meta tensors; None where only a file
    says what it is (an open_clip `hf-hub:` name). Unknown architectures raise ModelError."""
    if spec["source"] == "open_clip":
        return _open_clip(spec["name"])
    return _torchvision(spec["arch"])  # train and checkpoint models are torchvision architectures


@functools.cache
def _torchvision(arch: str) -> torch.nn.Module:
    import torchvision

    from nexplain.models.load import _build_torchvision

    known = torchvision.models.list_models(torchvision.models)  # classifiers: detectors fetch backbone weights
    if arch not in known:
        raise ModelError(f"unknown torchvision architecture {arch!r}; {_near(arch, known)}")
    try:
        with torch.device("meta"):
            return _build_torchvision(arch)
    except NotImplementedError:  # RegNet computes its widths with tensors, which meta ones lack
        return _build_torchvision(arch)


@functools.cache
def _open_clip(name: str) -> torch.nn.Module | None:
    if ":" in name:  # hf-hub:org/repo: its config lives in the hub cache
        return None
    from nexplain.models import load  # noqa: F401 - first: it sets HF_HUB_OFFLINE, so no network, as in the jobs

    import open_clip

    from nexplain.models.clip_registry import random_init, register_configs

    register_configs()
    if open_clip.get_model_config(name.replace("/", "-")) is None:
        raise ModelError(f"unknown open_clip model {name!r}; {_near(name, open_clip.list_models())}")
    try:
        with torch.device("meta"), random_init():
            return open_clip.create_model(name, pretrained=None, device="meta").visual
    except Exception as e:  # e.g. a Hugging Face text tower that is not installed or cached
        raise ModelError(f"open_clip cannot build {name}: {str(e).strip().splitlines()[0]}") from None


def unknown_layer(module: torch.nn.Module, name: str) -> str | None:
    """None when a job can hook `name`; else why not, with the valid choices near it."""
    try:
        get_layer(module, name)
        return None
    except ModelError:
        pass
    names = list_layers(module)
    parent = name
    while parent and parent not in names:  # the deepest valid layer the name starts with
        parent = parent.rpartition(".")[0]
    depth = parent.count(".") + 1 if parent else 0
    choices = [n for n in names if n.count(".") == depth and (not parent or n.startswith(parent + "."))]
    where = f"under '{parent}'" if parent else "(top level)"
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (f"unknown layer {name!r} of {type(module).__name__}; valid choices {where}: "
            f"{_shorten(compact_names(choices).split(', '))}{hint}")


def _near(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=8, cutoff=0.3) or valid[:8]
    return f"{len(valid)} are known, e.g. {', '.join(close)}"


def _shorten(names: list[str]) -> str:
    if len(names) <= _MAX_CHOICES:
        return ", ".join(names)
    return ", ".join(names[:_MAX_CHOICES]) + f", ... ({len(names)} in all)"
