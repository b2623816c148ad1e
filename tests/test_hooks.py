import pytest
import torch
import torchvision
from torch import nn

from nexplain.activations.hooks import Trace, TraceDict, compact_names, list_layers
from nexplain.errors import ModelError


class Counter(nn.Module):
    """Identity that counts its calls, to see which layers ran."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), Counter())


def n_hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_trace_retains_output_and_removes_hook():
    model, x = tiny(), torch.randn(2, 4)
    with Trace(model, "1") as t:
        y = model(x)
    assert torch.equal(t.output, torch.relu(model[0](x)))
    assert torch.equal(y, model(x))
    assert n_hooks(model) == 0


def test_hooks_removed_after_exception():
    model = tiny()
    with pytest.raises(ValueError):
        with TraceDict(model, ["0", "2"]):
            raise ValueError("boom")
    assert n_hooks(model) == 0
    with pytest.raises(RuntimeError):  # an error inside the forward pass itself
        with Trace(model, "0", stop=True):
            model(torch.randn(2, 7))
    assert n_hooks(model) == 0


def test_stop_skips_later_layers():
    model = tiny()
    with Trace(model, "1", stop=True) as t:
        model(torch.randn(2, 4))
    assert t.output.shape == (2, 5)
    assert model[3].calls == 0
    assert n_hooks(model) == 0


def test_tracedict_stops_after_all_layers_in_any_order():
    model = tiny()
    with TraceDict(model, ["2", "0"], stop=True) as td:
        model(torch.randn(2, 4))
    assert td["0"].output.shape == (2, 5) and td["2"].output.shape == (2, 3)
    assert model[3].calls == 0
    with TraceDict(model, ["0"]) as td:  # without stop the pass completes
        model(torch.randn(2, 4))
    assert model[3].calls == 1
    assert n_hooks(model) == 0


def test_dotted_names_resolve():
    model = torchvision.models.resnet18(num_classes=3).eval()
    with torch.inference_mode(), Trace(model, "layer1.0.conv1", stop=True) as t:
        model(torch.randn(1, 3, 32, 32))
    assert t.output.shape == (1, 64, 8, 8)


def test_unknown_layer_lists_valid_names():
    model = torchvision.models.resnet18(num_classes=3)
    names = list_layers(model)
    assert names[0] == "conv1" and names[-1] == "fc" and "" not in names
    with pytest.raises(ModelError) as err:
        Trace(model, "layer5")
    msg = str(err.value)
    assert "layer5" in msg and "layer4" in msg and "fc" in msg
    assert "layer4.{0..1}.conv1" in msg  # compact, yet every name is there
    with pytest.raises(ModelError):
        TraceDict(model, ["layer1", "nope"])
    assert n_hooks(model) == 0


def test_compact_names_never_invents_names():
    assert compact_names(["a.0.b", "a.1.b", "a.2.b"]) == "a.{0..2}.b"
    assert compact_names(["a.0", "a.2"]) == "a.{0,2}"
    # ragged grid: x.0.y.0, x.1.y.0, x.1.y.1 is not a full product
    assert compact_names(["x.0.y.0", "x.1.y.0", "x.1.y.1"]) == "x.0.y.0, x.1.y.0, x.1.y.1"
