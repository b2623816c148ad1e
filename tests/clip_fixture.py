"""Tiny open_clip models registered under a name of their own, for tests: a 2-block ViT on
32 px images (4 x 4 patches of 8 px) and a 1-block text tower."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip


def register_tiny_clip(directory: Path, name: str, vocab_size: int = 64, embed_dim: int = 32) -> str:
    """Register the config as `name` and return it. The bundled tokenizer needs the full
    vocabulary (49408); the visual tower alone does not."""
    cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 12, "vocab_size": vocab_size, "width": 32, "heads": 2, "layers": 1},
    }
    path = Path(directory) / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return name
