"""Load a model to explain from its config spec, never touching the network.

Every source returns a `LoadedModel`: the network in eval mode, the transform
that turns a PIL image into its input tensor, and a little metadata. Weights
that are not on disk raise ModelError saying which file is missing and how to
provide it, instead of trying (and, offline, hanging) to download it.
"""

from __future__ import annotations

import difflib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torchvision import transforms as T

from nexplain.errors import ConfigError, ModelError, first_line

# open_clip reaches Hugging Face through huggingface_hub, which reads this once at
# import time; set it before anything imports it so a cache miss fails fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SOURCES = ("checkpoint", "torchvision", "open_clip")
_FIRST_KEYS = 5  # how many offending keys an error message names


@dataclass
class LoadedModel:
    module: torch.nn.Module          # in eval mode, on CPU
    transform: Callable              # PIL image -> float tensor (C, H, W)
    spec: dict
    meta: dict = field(default_factory=dict)


def load_model(spec: dict) -> LoadedModel:
    source = spec.get("source")
    loaders = {"checkpoint": _load_checkpoint, "torchvision": _load_torchvision,
               "open_clip": _load_open_clip}
    if source not in loaders:
        raise ConfigError(f"unknown model source {source!r}; valid sources: {', '.join(SOURCES)}")
    loaded = loaders[source](spec)
    loaded.module.eval()
    return loaded


# --- checkpoint: a torchvision architecture plus a local state_dict ----------

def _load_checkpoint(spec: dict) -> LoadedModel:
    path = Path(spec["path"])
    state = read_state_dict(path)
    num_classes = spec.get("num_classes") or _infer_num_classes(state, path)
    module = _build_torchvision(spec["arch"], num_classes=num_classes)
    _load_state_dict(module, state, path)
    size = spec["input"]["size"]
    return LoadedModel(module, input_transform(spec["input"]), spec,
                       {"num_classes": num_classes, "input_size": size, "arch": spec["arch"]})


def read_state_dict(path: Path) -> dict:
    """The tensors of a weights file (safetensors, or a torch file read weights-only: never
    code), or a one-line ModelError naming the file and the cause."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelError(f"cannot read checkpoint {path}: the file is empty")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path), device="cpu")
        else:
            _check_zip(path)
            state = torch.load(path, weights_only=True, map_location="cpu")
    except ModelError:
        raise
    except Exception as e:  # zip, pickle, weights_only and safetensors errors all land here
        raise ModelError(f"cannot read checkpoint {path}: {_load_cause(e)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"checkpoint {path} holds a {type(state).__name__}, not a state_dict")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"checkpoint {path} is not a state_dict: entry {bad[0]!r} is a "
                         f"{type(state[bad[0]]).__name__}, not a tensor")
    return state


def _check_zip(path: Path) -> None:
    """Read a zip checkpoint through: a truncated one makes torch say only "Invalid argument",
    and torch.load never checks the CRC-32 torch.save stores per record, so a flipped byte
    in the weights would load silently; the zip reader checks it when read to the end."""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return  # the legacy (pre-1.6) format: no checksums
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.CRC:  # 0: saved with torch.serialization.set_crc32_options(False)
                    with archive.open(info) as f:
                        while f.read(1 << 24):
                            pass
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ModelError(f"cannot read checkpoint {path}: a truncated or corrupt zip archive ({e})") from None


def _load_cause(e: Exception) -> str:
    """The cause in a load error. torch's run to paragraphs that bury it, and they advise
    weights_only=False, which would run any code the file holds: never repeat that."""
    text = str(e)
    if "Weights only load failed." in text:
        return ("not a weights-only torch file (corrupt, or it would unpickle code): "
                + _weights_only_cause(text))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0].split(". ")[0] if lines else type(e).__name__  # the first sentence; the rest is advice


# Lines of torch's weights-only message around the unpickler's own (torch 2.6+).
_WO_ADVICE = ("In PyTorch", "This file can still", "(1)", "(2)", "Please file", "Check the documentation")


def _weights_only_cause(text: str) -> str:
    if "WeightsUnpickler error:" in text:
        text = text.rsplit("WeightsUnpickler error:", 1)[1]
    else:
        text = text.split("Weights only load failed.", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(_WO_ADVICE)]
    return lines[0].split(". ")[0].rstrip(".") if lines else "refused by the weights-only unpickler"


def _infer_num_classes(state: dict, path: Path) -> int:
    """Without `num_classes` (a model trained here), read it off the last linear layer."""
    for key in reversed(list(state)):
        if key.endswith(".weight") and getattr(state[key], "ndim", 0) == 2:
            return int(state[key].shape[0])
    raise ModelError(f"checkpoint {path}: give num_classes; no final linear layer to read it from")


def _load_state_dict(module: torch.nn.Module, state: dict, path: Path) -> None:
    _check_state_dict(module, state, path)
    try:
        module.load_state_dict(state)
    except Exception as e:  # keys and shapes fit, so e.g. a dtype that cannot be copied
        raise ModelError(f"checkpoint {path} does not fit {type(module).__name__}: {first_line(e)}") from None


def _check_state_dict(module: torch.nn.Module, state: dict, path: Path) -> None:
    """Name the first few bad keys ourselves; load_state_dict's message is a wall of text."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and hasattr(state[k], "shape") and state[k].shape != v.shape]
    problems = [f"{len(keys)} {what}: {', '.join(keys[:_FIRST_KEYS])}{', ...' if len(keys) > _FIRST_KEYS else ''}"
                for what, keys in (("missing", missing), ("unexpected", unexpected),
                                   ("shape-mismatched (file vs model)", mismatched)) if keys]
    if problems:
        raise ModelError(f"checkpoint {path} does not fit {type(module).__name__}: " + "; ".join(problems))


def input_transform(spec_input: dict) -> Callable:
    """Resize to a square (never crop: crops would shift activations off the masks), normalise."""
    size = spec_input["size"]
    return T.Compose([
        T.Resize((size, size)),
        T.ToTensor(),
        T.Normalize(spec_input["mean"], spec_input["std"]),
    ])


def _build_torchvision(arch: str, **kwargs) -> torch.nn.Module:
    try:
        return torchvision.models.get_model(arch, weights=None, **kwargs)
    except ValueError:
        raise ModelError(f"unknown torchvision architecture {arch!r}; e.g. "
                         f"{', '.join(torchvision.models.list_models(torchvision.models)[:12])}") from None


# --- torchvision: named weights from the local torch hub cache ---------------

def _load_torchvision(spec: dict) -> LoadedModel:
    arch, name = spec["arch"], spec.get("weights")
    if name is None:
        if "input" not in spec:
            raise ModelError(f"torchvision model {arch} with weights: null needs an `input` block "
                             "(size, mean, std) to build its transform")
        kwargs = {"num_classes": spec["num_classes"]} if "num_classes" in spec else {}
        module = _build_torchvision(arch, **kwargs)
        transform = input_transform(spec["input"])
        meta = {"num_classes": getattr(module, "num_classes", spec.get("num_classes")),
                "input_size": spec["input"]["size"], "arch": arch}
        return LoadedModel(module, transform, spec, meta)

    weights = _torchvision_weights(arch, name)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.is_file():
        raise ModelError(
            f"weights {arch}/{name} are not in the local torch hub cache: expected {cached}. "
            f"Offline, download {weights.url} elsewhere and copy it to that path "
            f"(or set TORCH_HOME to a directory whose hub/checkpoints/ holds it).")
    n_classes = len(weights.meta["categories"])
    if spec.get("num_classes", n_classes) != n_classes:
        raise ModelError(f"weights {arch}/{name} have {n_classes} classes, "
                         f"not num_classes: {spec['num_classes']}")
    module = _build_torchvision(arch, num_classes=n_classes)
    _load_state_dict(module, read_state_dict(cached), cached)
    # An explicit `input` block wins: the weights' own transform centre-crops.
    if "input" in spec:
        transform, size = input_transform(spec["input"]), spec["input"]["size"]
    else:
        transform = weights.transforms()
        size = transform.crop_size[0]
    meta = {"num_classes": n_classes, "arch": arch, "weights": name, "input_size": size}
    return LoadedModel(module, transform, spec, meta)


def _torchvision_weights(arch: str, name: str):
    try:
        enum = torchvision.models.get_model_weights(arch)
    except ValueError:
        _build_torchvision(arch)  # raises the unknown-architecture message
        raise
    try:
        return enum[name]
    except KeyError:
        raise ModelError(f"unknown weights {name!r} for {arch}; valid: "
                         f"{', '.join(enum.__members__)}") from None


# --- open_clip: the visual tower of a CLIP model -----------------------------

def _load_open_clip(spec: dict) -> LoadedModel:
    model, preprocess = _create_open_clip(spec, text=False)  # we keep only the visual tower
    visual = model.visual
    size = visual.image_size
    meta = {"name": spec["name"], "pretrained": spec.get("pretrained"),
            "input_size": size[0] if isinstance(size, (tuple, list)) else size,
            "embed_dim": getattr(visual, "output_dim", None)}
    return LoadedModel(visual, preprocess, spec, meta)


def load_clip(spec: dict, weights=None):
    """(model, preprocess, tokenizer) of a whole open_clip model (both towers), in eval
    mode; `spec`: name, pretrained (a tag in the local cache, a file, or None). `weights`: the
    file the job was handed, which wins over the spec's path (under remote storage the job's
    local copy lives elsewhere)."""
    import open_clip

    model, preprocess = _create_open_clip({**spec, "pretrained": weights} if weights else spec, text=True)
    return model.eval(), preprocess, open_clip.get_tokenizer(spec["name"])


def _create_open_clip(spec: dict, text: bool):
    import open_clip  # heavy import, only when asked for

    from nexplain.models.clip_registry import register_configs

    register_configs()  # nexplain's own architectures (the world's VLMs) are open_clip configs too
    name, pretrained = spec["name"], spec.get("pretrained")
    if open_clip.get_model_config(name.replace("/", "-")) is None and ":" not in name:
        models = open_clip.list_models()
        near = difflib.get_close_matches(name, models, n=8, cutoff=0.3) or models[:8]
        raise ModelError(f"unknown open_clip model {name!r}; {len(models)} are known "
                         f"(open_clip.list_models()), e.g. {', '.join(near)}")
    kwargs = {} if text else {"pretrained_text": False}
    if pretrained and not os.path.isfile(pretrained):
        cfg = open_clip.get_pretrained_cfg(name, pretrained)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise ModelError(f"open_clip model {name}: {pretrained!r} is neither a file nor a known "
                             f"tag; tags: {', '.join(tags) or 'none'}")
        # Hand open_clip the cached file itself so it never looks at the network;
        # keep the tag's preprocessing (mean, std, interpolation).
        kwargs["force_preprocess_cfg"] = {k: cfg[k] for k in
                                          ("mean", "std", "interpolation", "resize_mode") if k in cfg}
        pretrained = _open_clip_cached_file(name, pretrained, cfg)
    # Read the file ourselves first: our message names it and the cause, and open_clip
    # retries a torch.load that raises TypeError without weights_only, which runs code.
    state = _weights_shapes(Path(pretrained)) if pretrained else None
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, **kwargs)
    except Exception as e:
        if state is not None:  # name the keys that do not fit, not a KeyError or a wall of text
            _check_state_dict(open_clip.create_model(name), _unprefixed(state), Path(pretrained))
        raise ModelError(f"open_clip cannot build {name} (pretrained={spec.get('pretrained')!r}): "
                         f"{first_line(e)}") from None
    return model, preprocess


def _weights_shapes(path: Path) -> dict | None:
    """{key: tensor or meta tensor of its shape} of a weights file, checked as readable;
    a safetensors file's header suffices (it must cover the file exactly). None for
    big_vision .npz/.npy files, which open_clip reads with numpy (no pickle)."""
    if path.suffix in (".npz", ".npy"):
        return None
    if path.suffix != ".safetensors":
        return read_state_dict(path)
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
    except Exception as e:
        raise ModelError(f"cannot read checkpoint {path}: {_load_cause(e)}") from None


def _unprefixed(state: dict) -> dict:
    """The keys as open_clip loads them: a DataParallel `module.` prefix dropped."""
    if state and next(iter(state)).startswith("module"):
        return {k[7:]: v for k, v in state.items()}
    return state


def _open_clip_cached_file(name: str, tag: str, cfg: dict) -> str:
    """The local weights file for an open_clip tag, or ModelError saying how to provide one."""
    hf_hub, url = cfg.get("hf_hub", ""), cfg.get("url", "")
    if hf_hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hf_hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for fname in names:
            hit = try_to_load_from_cache(repo, fname)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
        where = f"Hugging Face repo {repo} (file {' or '.join(names)})"
    else:
        target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if target.is_file():
            return str(target)
        where = f"{url} (expected at {target})"
    raise ModelError(
        f"open_clip weights {name}/{tag} are not in the local cache: {where}. Offline, download them "
        f"elsewhere and set `pretrained:` to the local file path (or fill HF_HOME's hub cache).")
