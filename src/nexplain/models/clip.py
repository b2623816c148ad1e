"""The world's own vision-language models: small open_clip models trained on captions.

The architectures are open_clip model configs shipped with nexplain (`clip_configs/`,
registered with open_clip on first use), built by `open_clip.create_model_and_transforms`
and tokenised by open_clip's bundled tokenizer, so a trained checkpoint loads exactly like a
pretrained one: `create_model_and_transforms(name, pretrained=path)`.

Losses are open_clip's: `SigLipLoss` (sigmoid) or `ClipLoss` (contrastive). With the sigmoid
loss a single-concept prompt ("red") is a positive for every image of the batch holding that
concept, not only for its own image: otherwise the loss would push "red" away from every
other red image and zero-shot presence would suffer. Each step also scores every concept's
bare name against every image of the batch (`concept_texts`): the sigmoid loss over those
pairs is exactly zero-shot presence on the train split, which captions alone teach slowly
for shapes and textures. With `crops`, each step also scores object crops (`nexplain.vlm.crops`)
against the concept names: a crop says which shape, colour and texture one thing has, where a
whole image only says they are somewhere among up to four things, and a size-agnostic tower
(`nexplain-world-cnn`) reaches the same AUC from them in about half the time.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from nexplain.errors import ConfigError
from nexplain.io import atomic_path
from nexplain.models.clip_registry import random_init, register_configs

log = logging.getLogger(__name__)
LOSSES = ("siglip", "clip")
PRECISIONS = ("fp32", "bf16", "auto")


@dataclass(frozen=True)
class TrainSettings:
    loss: str = "siglip"
    epochs: int = 6
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: float = 0.1          # share of the steps with a linear warm-up, then cosine decay
    prompt_share: float = 0.5    # share of the texts that are single-concept prompts
    concept_texts: bool = True   # sigmoid loss: every step also scores each concept's name
    precision: str = "fp32"      # bf16: the image tower under bfloat16 autocast; auto: bf16 where native
    crops: int = 0               # object crops per step (sigmoid loss, size-agnostic image tower)
    crop_size: int = 48          # their side, in input pixels
    train_token_embedding: bool = True  # false: keep its random init (6.3 M fewer weights per step)
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: dict) -> TrainSettings:
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"VLM train: unknown keys {sorted(unknown)}; valid: "
                              f"{sorted(cls.__dataclass_fields__)}")
        s = cls(**cfg)
        if s.loss not in LOSSES:
            raise ConfigError(f"VLM train.loss {s.loss!r}: valid choices are {', '.join(LOSSES)}")
        if s.precision not in PRECISIONS:
            raise ConfigError(f"VLM train.precision {s.precision!r}: valid choices are {', '.join(PRECISIONS)}")
        if s.crops and not (s.loss == "siglip" and s.concept_texts):
            raise ConfigError("VLM train.crops needs loss: siglip with concept_texts: true "
                              "(a crop is scored against the concept names)")
        return s


def native_bf16(device) -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU, or a CPU with AVX512-BF16 or AMX.
    Elsewhere (an AVX2-only CPU) bf16 is emulated, about 10x slower than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(precision: str, device) -> str:
    """`auto` -> bf16 where the device computes it natively, else fp32; bf16 asked for on a
    device that only emulates it is kept (the bytes of a recipe stay), with a warning."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and not native_bf16(device):
        log.warning("VLM precision bf16 on %s, which has no native bfloat16: about 10x slower than fp32 "
                    "(precision: auto picks fp32 here)", torch.device(device))
    return precision


class _PositivesSigLip:
    """open_clip's SigLipLoss with a given +1/-1 target matrix instead of the identity."""

    def __init__(self):
        from open_clip.loss import SigLipLoss

        class _Loss(SigLipLoss):
            targets: torch.Tensor

            def get_ground_truth(self, device, dtype, num_logits, negative_only=False):
                return self.targets.to(device=device, dtype=dtype)

        self.loss = _Loss()

    def __call__(self, img, txt, model, targets):
        self.loss.targets = targets
        return self.loss(img, txt, model.logit_scale.exp(), model.logit_bias)


class _Texts:
    """Tokenised captions and prompts; draws one text per image for a batch."""

    def __init__(self, table: pd.DataFrame, tokenizer, concept_names: list[str]):
        caps, prompts = table["captions"].tolist(), table["prompts"].tolist()
        strings = sorted({t for row in caps for t in row} | {t for row in prompts for t in row})
        index = {t: k for k, t in enumerate(strings)}
        self.tokens = torch.cat([tokenizer(strings[s:s + 4096]) for s in range(0, len(strings), 4096)])
        self.captions = [np.array([index[t] for t in row]) for row in caps]
        self.prompts = [np.array([index[t] for t in row], np.int64) for row in prompts]
        col = {c: j for j, c in enumerate(concept_names)}
        self.prompt_concepts = [np.array([col[c] for c in row], np.int64) for row in table["concepts"]]
        self.present = np.zeros((len(table), len(concept_names)), bool)
        for i, row in enumerate(self.prompt_concepts):
            self.present[i, row] = True
        # concept names as texts of their own, for the concepts that vary over the images
        self.varying = np.flatnonzero(self.present.any(axis=0) & ~self.present.all(axis=0))
        self.concept_tokens = tokenizer([concept_names[j].replace("_", " ") for j in self.varying])

    def concept_targets(self, rows: np.ndarray, present: np.ndarray | None = None) -> torch.Tensor:
        """(B, K) +1/-1: image rows[i] (or row i of `present`) holds varying concept k."""
        held = self.present[rows] if present is None else present[rows]
        return torch.from_numpy(np.where(held[:, self.varying], 1.0, -1.0).astype(np.float32))

    def draw(self, rng, rows: np.ndarray, prompt_share: float):
        """(token ids (B, L), targets (B, B) +1/-1): text i belongs to image rows[i]."""
        picks, concept = [], np.full(len(rows), -1)
        for i, r in enumerate(rows):
            if len(self.prompts[r]) and rng.random() < prompt_share:
                k = rng.integers(len(self.prompts[r]))
                picks.append(self.prompts[r][k])
                concept[i] = self.prompt_concepts[r][k]
            else:
                picks.append(self.captions[r][rng.integers(len(self.captions[r]))])
        targets = np.eye(len(rows), dtype=bool)
        is_prompt = concept >= 0
        targets[:, is_prompt] |= self.present[rows][:, concept[is_prompt]]
        return self.tokens[np.array(picks)], torch.from_numpy(np.where(targets, 1.0, -1.0).astype(np.float32))


class _Crops:
    """Object crops (`nexplain.vlm.crops.object_crops` rows): draws a jittered, turned batch."""

    def __init__(self, crops: pd.DataFrame, concept_names: list[str], size: int):
        col = {c: j for j, c in enumerate(concept_names)}
        self.row = crops["row"].to_numpy()
        self.centre = crops[["cy", "cx"]].to_numpy()
        self.present = np.zeros((len(crops), len(concept_names)), bool)
        for i, names in enumerate(crops["concepts"]):
            self.present[i, [col[c] for c in names if c in col]] = True
        self.size = size

    def draw(self, rng, images: torch.Tensor, n: int) -> tuple[torch.Tensor, np.ndarray]:
        """(n crops (n, 3, size, size), their rows in this table)."""
        pick = rng.integers(0, len(self.row), n)
        side, half = images.shape[-1], self.size / 2
        jitter = rng.integers(-(self.size // 12), self.size // 12 + 1, (n, 2))
        top_left = np.clip(np.round(self.centre[pick] - half) + jitter, 0, side - self.size).astype(int)
        batch = torch.stack([images[r, :, y:y + self.size, x:x + self.size]
                             for r, (y, x) in zip(self.row[pick], top_left)])
        return batch, pick


def dihedral(x: torch.Tensor, rng) -> torch.Tensor:
    """Each square image turned by a random multiple of 90 degrees and mirrored half the time:
    captions name no sides or orientations, so the 8 views share one text."""
    turn, flip = rng.integers(0, 4, len(x)), rng.random(len(x)) < 0.5
    out = x.clone()
    for k in range(4):
        for f in (False, True):
            sel = torch.from_numpy(np.flatnonzero((turn == k) & (flip == f))).to(x.device)
            if len(sel):
                v = torch.rot90(x[sel], k, dims=(-2, -1))
                out[sel] = v.flip(-1) if f else v
    return out


def encode_text(model, tokens: torch.Tensor) -> torch.Tensor:
    """model.encode_text(tokens, normalize=True), run only up to the batch's longest text.

    Exact for open_clip's causal text tower with end-of-text pooling: no position attends
    to a later one, so padding past every text's end never reaches a pooled token. Concept
    names are 3-4 tokens of a 32-token context, so this is most of the text tower's time."""
    from open_clip.transformer import text_global_pool

    if getattr(model, "text_pool_type", None) != "argmax" or not hasattr(model, "attn_mask"):
        return model.encode_text(tokens, normalize=True)  # not a plain causal CLIP text tower
    used = int((tokens != 0).any(dim=0).nonzero().max()) + 1 if tokens.any() else tokens.shape[1]
    tokens = tokens[:, :used]
    x = model.token_embedding(tokens) + model.positional_embedding[:used]
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:used, :used]))
    x = text_global_pool(x, tokens, model.text_pool_type)
    x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection
    return F.normalize(x, dim=-1)


def _schedule(step: int, total: int, warmup: float) -> float:
    w = max(1, int(total * warmup))
    return (step + 1) / w if step < w else 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, total - w)))


def new_model(name: str, seed: int):
    """(randomly initialised open_clip model `name` from `seed`, its image preprocessing)."""
    import open_clip

    register_configs()
    torch.manual_seed(seed)
    with random_init():
        model, _, preprocess = open_clip.create_model_and_transforms(name)
    return model, preprocess


def train_clip(model, name: str, images: torch.Tensor, table: pd.DataFrame, concept_names: list[str],
               settings: TrainSettings, progress: bool = True, device: str = "cpu",
               crops: pd.DataFrame | None = None):
    """Train `model` (open_clip model `name`) on `images` (N, 3, S, S), preprocessed as the
    model expects, with the caption `table` rows in the same order, on `device` (the images
    stay where they are; each batch moves); returns (model in eval mode, per-step losses).

    With `settings.crops`, each step also scores that many object crops (`crops`: rows of
    `nexplain.vlm.crops.object_crops` over the same images) against the concept names."""
    import open_clip
    from open_clip.loss import ClipLoss

    device = torch.device(device)
    model.to(device)
    texts = _Texts(table, open_clip.get_tokenizer(name), concept_names)
    concept_tokens = texts.concept_tokens.to(device)
    crop_table = _crop_table(model, crops, concept_names, settings, device)
    siglip = _PositivesSigLip() if settings.loss == "siglip" else None
    clip_loss = ClipLoss() if settings.loss == "clip" else None
    if hasattr(model, "token_embedding"):  # open_clip's own text tower
        model.token_embedding.weight.requires_grad_(settings.train_token_embedding)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=settings.lr, fused=True)
    n, bs = len(images), min(settings.batch_size, len(images))
    steps_per_epoch = max(1, n // bs)
    total = settings.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total, settings.warmup))
    rng = np.random.default_rng(settings.seed)
    losses = []
    model.visual.to(memory_format=torch.channels_last)  # 1.4-1.8x faster CPU convolutions
    bf16 = resolve_precision(settings.precision, device) == "bf16"
    model.train()
    with tqdm(total=total, desc=f"train {name}", disable=not progress) as bar:
        for _ in range(settings.epochs):
            order = rng.permutation(n)
            for s in range(steps_per_epoch):
                rows = order[s * bs:(s + 1) * bs]
                x = dihedral(images[rows].to(device), rng).contiguous(memory_format=torch.channels_last)
                tokens, targets = (t.to(device) for t in texts.draw(rng, rows, settings.prompt_share))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    img = model.encode_image(x)
                img = F.normalize(img.float(), dim=-1)
                txt = encode_text(model, tokens)
                if siglip is not None:
                    if settings.concept_texts:  # zero-shot presence as a loss term: B x K more pairs
                        names = encode_text(model, concept_tokens)
                        txt = torch.cat([txt, names])
                        targets = torch.cat([targets, texts.concept_targets(rows).to(device)], dim=1)
                    loss = siglip(img, txt, model, targets)
                    if crop_table is not None:  # each crop against the concept names
                        xc, pick = crop_table.draw(rng, images, settings.crops)
                        xc = dihedral(xc.to(device), rng).contiguous(memory_format=torch.channels_last)
                        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                            cimg = model.encode_image(xc)
                        ctarget = texts.concept_targets(pick, crop_table.present).to(device)
                        loss = loss + siglip(F.normalize(cimg.float(), dim=-1), names, model, ctarget)
                else:
                    loss = clip_loss(img, txt, model.logit_scale.exp())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                bar.update()
    return model.eval(), losses


def _crop_table(model, crops, concept_names, settings, device) -> _Crops | None:
    """The crops to draw from, after checking the image tower takes crop-sized inputs."""
    if not settings.crops:
        return None
    if crops is None or not len(crops):
        raise ConfigError("VLM train.crops is set but no object crops were given (the dataset needs pixel labels)")
    table = _Crops(crops, concept_names, settings.crop_size)
    training = model.training
    model.eval()  # the probe must not move BatchNorm statistics
    try:
        with torch.no_grad():
            model.encode_image(torch.zeros(1, 3, settings.crop_size, settings.crop_size, device=device))
    except RuntimeError as e:
        raise ConfigError(f"VLM train.crops: the image tower does not take {settings.crop_size} px crops "
                          f"(use a size-agnostic tower such as nexplain-world-cnn): {e}") from None
    finally:
        model.train(training)
    return table


def save_checkpoint(model, path) -> None:
    """The state dict as safetensors (open_clip's own hub format; no pickle, same bytes for
    the same weights), written to a temporary file and renamed."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))


def preprocess_images(table, preprocess, ids, progress: bool = True) -> torch.Tensor:
    """The images `ids` of an ImageTable through `preprocess`, stacked (N, 3, S, S)."""
    from nexplain.data.images import ImageDataset

    ds = ImageDataset(table, preprocess, ids=ids)
    return torch.stack([ds[i][0] for i in tqdm(range(len(ds)), desc="images", disable=not progress)])
