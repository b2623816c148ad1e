"""Ablation of a VLM image tower's units (a ViT's MLP neurons): its tail, then a zero-shot class head.

An image tower outputs an embedding, not class logits. `TowerTail` replays the tower after the
layer (`Tail(..., extras=True)`: the MLP's tail also reads the block's residual stream) and
scores the embedding against the class names' text embeddings, the VLM's zero-shot classifier:
logits = scale * cos(image, class text). A token layer's output (N, T, U) is shown to `Ablation`
as maps (N, U, T, 1), so that replacing a unit sets every token of it, the CLS token included;
`inputs(ids)` computes those maps and the residual stream from the images, since the activation
tables hold only the patch tokens.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nexplain.errors import DataError
from nexplain.linear.tail import Tail


class TowerTail(torch.nn.Module):
    def __init__(self, tail: Tail, text: torch.Tensor, scale: float):
        super().__init__()
        self.tail, self.layer, self.linear = tail, tail.layer, None
        self.register_buffer("text", F.normalize(text.float(), dim=-1))  # (classes, D)
        self.scale = float(scale)

    def forward(self, maps: torch.Tensor, *extras: torch.Tensor) -> torch.Tensor:
        acts = maps[..., 0].transpose(1, 2)  # (N, U, T, 1) -> (N, T, U)
        emb = self.tail(acts, *extras)
        return self.scale * F.normalize(emb, dim=-1) @ self.text.T.to(emb.dtype)


def layer_tail(spec: dict, layer: str, table, template: str = "{}"):
    """(tail, inputs) for ablating `layer` of model `spec` on dataset `table`: a classifier's
    `Tail` and None (the activation tables feed it), or an open_clip image tower's `TowerTail`
    and `inputs(ids)` -> (maps, extras) computed from the images."""
    from nexplain.models.load import load_clip, load_model

    if spec["source"] != "open_clip":
        return Tail(load_model(spec).module, layer), None
    if not table.class_names:
        raise DataError(f"{table.root}: no class names, which the zero-shot head of image tower "
                        f"{spec['name']!r} needs for ablation")
    from nexplain.data.images import load_image
    from nexplain.vlm.vlm import text_embeddings

    model, preprocess, tokenizer = load_clip(spec)
    text = torch.as_tensor(text_embeddings(model, tokenizer, list(table.class_names), template))
    scale = float(model.logit_scale.detach().exp()) if hasattr(model, "logit_scale") else 1.0
    tail = TowerTail(Tail(model.visual, layer, extras=True), text, scale).eval()

    def inputs(ids):
        return tower_inputs(tail, torch.stack([preprocess(load_image(table.paths[i])) for i in ids]))

    return tail, inputs


def tower_inputs(tail: TowerTail, images, batch_size: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
    """(maps (N, U, T, 1), [extras, batch first]) of float images (N, 3, H, W), already normalised."""
    maps, extras = [], []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            acts, ex = tail.tail.capture(torch.as_tensor(images[s:s + batch_size]))
            if acts.shape[0] != min(batch_size, len(images) - s):
                raise ValueError(f"{tail.layer!r}: tokens are not batch first ({tuple(acts.shape)})")
            maps.append(acts.transpose(1, 2)[..., None].float().numpy())
            extras.append([e.float().numpy() for e in ex])
    return np.concatenate(maps), [np.concatenate(parts) for parts in zip(*extras)]
