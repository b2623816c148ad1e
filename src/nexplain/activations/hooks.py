"""Read the output of named layers during a forward pass.

In the spirit of baukit's nethook: `Trace` and `TraceDict` are context managers
that hook modules by their dotted names (as in `model.named_modules()`), keep
what they output, and may stop the forward pass once every requested layer has
run, so the rest of the network is never computed.

    with Trace(model, "layer3", stop=True) as t:
        model(x)
    t.output  # (B, C, H, W)
"""

from __future__ import annotations

import contextlib
import difflib
from collections import defaultdict

import torch

from nexplain.errors import ModelError


class _StopForward(Exception):
    """Raised inside a hook to abandon the rest of the forward pass."""


def list_layers(model: torch.nn.Module) -> list[str]:
    """Every hookable module name, in definition order (the root is left out)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The submodule at a dotted name; an unknown name raises ModelError listing all names."""
    try:
        if not name:
            raise AttributeError(name)
        return model.get_submodule(name)
    except AttributeError:
        raise ModelError(_unknown_layer_message(model, name)) from None


class Trace(contextlib.AbstractContextManager):
    """Retain the output of one named layer; with stop=True, end the forward pass there."""

    def __init__(self, model: torch.nn.Module, layer: str, stop: bool = False, *, _after=None):
        self.layer = layer
        self.output = None
        module = get_layer(model, layer)

        def hook(module, inputs, output):
            self.output = output
            if _after is not None:
                _after(layer)
            if stop:
                raise _StopForward()

        self._handle = module.register_forward_hook(hook)

    def __exit__(self, exc_type, exc, tb):
        self.close()
        # Swallowing the stop signal is what makes `model(x)` look like it returned.
        return exc_type is not None and issubclass(exc_type, _StopForward)

    def close(self) -> None:
        self._handle.remove()


class TraceDict(dict, contextlib.AbstractContextManager):
    """Trace several layers at once: `td[name].output`.

    With stop=True the forward pass ends as soon as every listed layer has run,
    whatever order the network runs them in.
    """

    def __init__(self, model: torch.nn.Module, layers, stop: bool = False):
        super().__init__()
        layers = list(dict.fromkeys(layers))  # drop duplicates, keep order
        for name in layers:  # validate every name before hooking any
            get_layer(model, name)
        pending = set(layers)

        def after(name):
            pending.discard(name)
            if stop and not pending:
                raise _StopForward()

        for name in layers:
            self[name] = Trace(model, name, _after=after)

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return exc_type is not None and issubclass(exc_type, _StopForward)

    def close(self) -> None:
        for trace in self.values():
            trace.close()


def _unknown_layer_message(model: torch.nn.Module, name: str) -> str:
    names = list_layers(model)
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (
        f"unknown layer {name!r} in {type(model).__name__}.{hint} "
        f"Valid layers ({len(names)}): {compact_names(names)}"
    )


def compact_names(names: list[str]) -> str:
    """Write many layer names briefly by folding numeric path parts into ranges.

    ["blocks.0.mlp", "blocks.1.mlp", "blocks.2.mlp"] -> "blocks.{0..2}.mlp".
    A group is folded only when it is a full grid of indices, so nothing is invented.
    """
    groups: dict[tuple, list[tuple[int, ...]]] = defaultdict(list)
    for name in names:
        parts = name.split(".")
        pattern = tuple(None if p.isdigit() else p for p in parts)
        groups[pattern].append(tuple(int(p) for p in parts if p.isdigit()))

    out = []
    for pattern, indices in groups.items():  # dicts keep first-seen order
        columns = [sorted(set(col)) for col in zip(*indices)] if indices[0] else []
        size = 1
        for col in columns:
            size *= len(col)
        if size == len(indices):
            ranges = iter(_ranges(col) for col in columns)
            out.append(".".join(p if p is not None else next(ranges) for p in pattern))
        else:  # ragged: list the names of this group one by one
            for idx in indices:
                it = iter(idx)
                out.append(".".join(p if p is not None else str(next(it)) for p in pattern))
    return ", ".join(out)


def _ranges(values: list[int]) -> str:
    if len(values) == 1:
        return str(values[0])
    if values == list(range(values[0], values[-1] + 1)):
        return f"{{{values[0]}..{values[-1]}}}"
    return "{" + ",".join(map(str, values)) + "}"

