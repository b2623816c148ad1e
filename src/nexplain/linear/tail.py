"""The network after a layer, as a function of that layer's output: for replacing units.

`Tail(module, layer)` traces the model with torch.fx, keeping `layer` as one opaque call,
and keeps the graph from that call to the output. When the rest is global average pooling,
flatten and one Linear (ResNet layer4 -> avgpool -> fc), `linear` holds (W, b) and
logits follow exactly from pooled activations (the activation summaries). Otherwise the
tail replays the remaining modules on cached layer outputs. A tail that also reads
anything computed before the layer (a skip connection around it: a transformer MLP's
residual stream) raises a ModelError naming what it reads, unless `extras=True`: then those
values are more inputs of the tail, in `extras` order, and `capture(x)` computes the layer's
output and them in one forward pass.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from nexplain.activations.hooks import get_layer
from nexplain.errors import ModelError


class _StopAt(fx.Tracer):
    def __init__(self, layer: str):
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, m, qualname: str) -> bool:
        return qualname == self.layer or super().is_leaf_module(m, qualname)


class Tail(torch.nn.Module):
    def __init__(self, module: torch.nn.Module, layer: str, extras: bool = False):
        super().__init__()
        get_layer(module, layer)  # a clear error for an unknown layer
        try:
            graph = _StopAt(layer).trace(module)
        except Exception as e:  # fx raises many types on untraceable code
            raise ModelError(f"cannot trace the model to replay what follows {layer!r}: "
                             f"{type(e).__name__}: {e}") from None
        at = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
        if len(at) != 1:
            raise ModelError(f"layer {layer!r} is called {len(at)} times in the forward pass; "
                             "tail replay needs exactly one call")
        self.layer = layer
        tail, self.extras = _tail_graph(graph, at[0], layer, extras)
        self.graph_module = fx.GraphModule(module, tail)
        self.linear = None if extras else _linear_head(self.graph_module)
        self._full, self._at = (fx.GraphModule(module, graph), at[0].name) if extras else (None, None)

    def forward(self, acts: torch.Tensor, *extras: torch.Tensor) -> torch.Tensor:
        return self.graph_module(acts, *extras)

    def capture(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(the layer's output, [each extra input of the tail]) on a model input `x`."""
        if self._full is None:
            raise ModelError(f"the tail after {self.layer!r} was built without extras=True")
        want, seen = {self._at, *self.extras}, {}

        class Record(fx.Interpreter):
            def run_node(self, n):
                out = super().run_node(n)
                if n.name in want:
                    seen[n.name] = out
                return out

        Record(self._full).run(x)
        return seen[self._at], [seen[name] for name in self.extras]


def _tail_graph(graph: fx.Graph, at: fx.Node, layer: str, extras: bool = False) -> tuple[fx.Graph, list[str]]:
    """(the graph from `at` to the output, the names of the earlier nodes it reads: placeholders
    after `acts`, in this order; only where `extras`)."""
    after, order = {at}, list(graph.nodes)
    for n in order[order.index(at) + 1:]:
        if any(a in after for a in n.all_input_nodes):
            after.add(n)
    out = next(n for n in order if n.op == "output")
    if out not in after:
        raise ModelError(f"the model's output does not depend on {layer!r}")
    tail, env = fx.Graph(), {}
    env[at] = tail.placeholder("acts")
    outside = [a for n in order[order.index(at) + 1:] if n in after for a in n.all_input_nodes
               if a not in after and a.op != "get_attr"]  # parameters and buffers are read again
    outside = list(dict.fromkeys(outside))
    if outside and not extras:
        raise ModelError(f"after {layer!r} the network also reads {[_describe(a) for a in outside]} (computed "
                         "before it): its tail cannot be replayed from that layer's output")
    for a in outside:
        env[a] = tail.placeholder(f"extra_{a.name}")
    for n in order[order.index(at) + 1:]:
        if n in after:
            for a in n.all_input_nodes:
                if a not in env:  # a get_attr
                    env[a] = tail.node_copy(a)
            env[n] = tail.node_copy(n, lambda a: env[a])
    tail.lint()
    return tail, [a.name for a in outside]


def _describe(node: fx.Node) -> str:
    """A node by the nearest module (or the model input) it is computed from."""
    seen, todo = set(), [node]
    while todo:
        n = todo.pop(0)
        if n.op == "call_module":
            return f"{node.name} (from module {n.target!r})"
        if n.op == "placeholder":
            return f"{node.name} (from the model input)"
        seen.add(n)
        todo += [a for a in n.all_input_nodes if a not in seen]
    return node.name


def _linear_head(gm: fx.GraphModule):
    """(W, b) when the tail is global average pooling, flatten, one Linear; else None."""
    nodes = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
    if len(nodes) != 3:
        return None
    pool, flat, fc = nodes
    mods = dict(gm.named_modules())
    ok = (pool.op == "call_module" and isinstance(mods[pool.target], torch.nn.AdaptiveAvgPool2d)
          and mods[pool.target].output_size in (1, (1, 1))
          and flat.op == "call_function" and flat.target is torch.flatten
          and fc.op == "call_module" and isinstance(mods[fc.target], torch.nn.Linear))
    if not ok:
        return None
    lin = mods[fc.target]
    bias = lin.bias if lin.bias is not None else torch.zeros(lin.out_features)
    return lin.weight.detach(), bias.detach()
