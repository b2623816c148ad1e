"""nexplain.compute: devices, stage settings, and that the CPU path is the old one."""

import platform
import resource

import numpy as np
import pytest
import torch

from nexplain.compute import Compute, DeviceError, keep_freed_memory, resolve_device, stage_settings


def test_auto_and_cpu_resolve_here():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_where_there_is_none_is_one_line(name):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error is for machines without it")
    with pytest.raises(DeviceError) as e:
        resolve_device(name)
    message = str(e.value)
    assert "\n" not in message and f"device '{name}' asked for" in message and "no CUDA device" in message


def test_an_unknown_device_names_the_valid_ones():
    with pytest.raises(DeviceError, match="unknown device 'gpu'; valid: auto, cpu, cuda, cuda:N"):
        resolve_device("gpu")


def test_a_stage_overrides_the_block():
    block = {"device": "cpu", "loader_workers": 3,
             "stages": {"activations": {"device": "auto", "batch_size": 8, "amp": True}, "train_model": {}}}
    assert stage_settings(block, "activations") == {"device": "auto", "batch_size": 8, "amp": True,
                                                    "loader_workers": 3}
    assert stage_settings(block, "train_model") == {"device": "cpu", "batch_size": None, "amp": False,
                                                    "loader_workers": 3}
    assert stage_settings(None, "relevance")["device"] == "cpu"  # no block: the CPU, as before devices


def test_the_cpu_path_changes_nothing():
    c = Compute.of({"device": "cpu", "batch_size": 4, "amp": False, "loader_workers": 8})
    x = torch.arange(6.0)
    assert c.to(x) is x  # no copy
    assert c.loader_options(1) == {"num_workers": 1}  # CPU jobs keep their own loader settings
    with c.autocast():
        assert torch.get_autocast_dtype("cpu") is not None and not torch.is_autocast_enabled("cpu")


def test_amp_autocasts_inference_to_bf16():
    c = Compute(amp=True)
    lin = torch.nn.Linear(4, 3)
    with torch.inference_mode(), c.autocast():
        y = lin(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    assert np.isfinite(y.float().numpy()).all()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_reuses_pages():
    assert keep_freed_memory()
    torch.manual_seed(0)
    stem = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 7, stride=2, padding=3), torch.nn.BatchNorm2d(64),
                               torch.nn.ReLU()).eval()
    x = torch.randn(64, 3, 112, 112)  # a ResNet stem's batch: 51 MB out, as in the extraction

    def faults_of_one_batch():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        with torch.inference_mode():
            stem(x)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    first, later = faults_of_one_batch(), [faults_of_one_batch() for _ in range(5)]
    # The default allocator faults every batch in afresh (about 50,000 pages each, 5x the
    # first batch's count over these 5). Kept, later batches mostly reuse the first one's
    # pages; now and then a 51 MB block still comes back fresh (12,544 pages).
    assert sum(later) < 2 * first, (first, later)
