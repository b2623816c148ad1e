"""Train a torchvision classifier from scratch on an ImageTable, deterministically.

The default world is small (~3,000 images of 112 px), so every split is decoded
once into a uint8 tensor and training never touches a PNG again. The same call
twice gives byte-identical checkpoints: seeds, thread count, data order and
augmentation all come from `seed`, and `save_checkpoint` writes stable bytes.
"""

from __future__ import annotations

import io
import logging
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision import transforms as T
from tqdm import tqdm

from nexplain.compute import Compute
from nexplain.data.images import ImageTable, load_image
from nexplain.errors import DataError
from nexplain.io import atomic_path

log = logging.getLogger(__name__)

SHIFT = 8  # max random translation in pixels (reflect-padded), at 112 px ~7%
SPLITS = ("train", "val", "test")


def train_classifier(table: ImageTable, *, arch: str = "resnet18", image_size: int = 112,
                     epochs: int = 5, batch_size: int = 32, lr: float = 0.05,
                     weight_decay: float = 5e-4, seed: int = 0, threads: int = 2,
                     mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), progress: bool = True,
                     compute: Compute | None = None, low_res: dict | None = None, plant=None,
                     on_epoch=None):
    """Train `arch` (random init) on the train split, on `compute`'s device (default: the CPU);
    returns (model in eval mode, on the CPU, metrics).

    SGD with Nesterov momentum and a one-cycle learning-rate schedule; augmentation
    is a random horizontal flip and a small random shift, which keep every label.
    `low_res` {size, epochs}: the first `epochs` epochs see the batches downscaled to `size`
    pixels (progressive resizing: a 64 px epoch costs a third of a 112 px one; the
    full-size epochs that follow adapt the network, its batch norms included, to the size
    it is explained at).
    Images without a class are left out and counted (`labelled_splits`).
    `plant`: a `nexplain.truth.plant.Planting` whose loss is added to the class loss, its
    targets augmented with the images (the planted model of `snakemake truth`).
    `on_epoch(epoch, model)`: called with the random init (epoch 0) and after every epoch, e.g.
    to save snapshots; it must not touch the model or a random generator.
    """
    compute = compute or Compute()
    _seed_everything(seed, compute.cuda)
    torch.set_num_threads(threads)
    labels, num_classes = _labels(table)
    splits, unlabelled = labelled_splits(table)
    if len(splits["train"]) < batch_size:
        more = (f" ({unlabelled['train']} more have no class in {_labels_file(table)})"
                if unlabelled["train"] else "")
        raise DataError(f"{table.root}: {len(splits['train'])} training images{more}, fewer than "
                        f"one batch of {batch_size}")
    images = {s: decode_images(table, ids, image_size, progress) for s, ids in splits.items()}
    targets = {s: torch.as_tensor(labels[ids], dtype=torch.long) for s, ids in splits.items()}
    normalize = normalizer(mean, std, compute.device)

    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    model.to(compute.device, memory_format=torch.channels_last)  # ~1.4x faster convolutions on CPU
    steps_per_epoch = len(splits["train"]) // batch_size  # drop the ragged last batch
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.25)
    generator = torch.Generator().manual_seed(seed)  # the only source of data randomness
    on_epoch = on_epoch or (lambda epoch, model: None)
    on_epoch(0, model)

    history = []
    for epoch in range(epochs):
        epoch_start = time.perf_counter()
        model.train()
        size = low_res["size"] if low_res and epoch < low_res["epochs"] else image_size
        order = torch.randperm(len(splits["train"]), generator=generator)
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress)
        for step in bar:
            idx = order[step * batch_size:(step + 1) * batch_size]
            if plant is None:
                x = normalize(compute.to(augment(images["train"][idx], generator, size)))
                loss = F.cross_entropy(model(x), compute.to(targets["train"][idx]))
            else:
                loss = _planted_step(model, plant, images["train"][idx], splits["train"][idx.numpy()],
                                     targets["train"][idx], generator, size, normalize, compute)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        val_acc = accuracy(model, images["val"], targets["val"], normalize, compute=compute)
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                        "val_accuracy": val_acc})
        log.info("epoch %d: loss %.3f, val acc %s, %.0f s", epoch + 1, history[-1]["train_loss"],
                 _fmt(val_acc), time.perf_counter() - epoch_start)  # into the rule's log file
        on_epoch(epoch + 1, model)

    model.eval()
    metrics = {
        "arch": arch, "num_classes": num_classes, "chance": 1.0 / num_classes,
        "n_train": len(splits["train"]), "n_val": len(splits["val"]), "n_test": len(splits["test"]),
        "val_accuracy": history[-1]["val_accuracy"],
        "test_accuracy": accuracy(model, images["test"], targets["test"], normalize, compute=compute),
        "history": history,  # no timings: the metrics file is an artifact and must be reproducible
    }
    if any(unlabelled.values()):  # only then: a fully labelled dataset keeps its metrics bytes
        metrics["unlabelled_images"] = unlabelled
    return model.cpu(), metrics


def _planted_step(model, plant, raw, image_ids, y, generator, size, normalize, compute):
    """Class loss plus the planting loss, the targets flipped, shifted and scaled with the images."""
    from nexplain.truth.plant import PreActivation

    both = augment(torch.cat([raw.float(), plant.batch(torch.as_tensor(image_ids), raw.shape[-2:])], 1),
                   generator, size)
    x, t = normalize(compute.to(both[:, :3])), compute.to(both[:, 3:] / 255)
    with PreActivation(model, plant.layers) as hooks:
        logits = model(x)
    return F.cross_entropy(logits, compute.to(y)) + plant.loss(hooks.pre, t)


def labelled_splits(table: ImageTable) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """({split: ids of its images with a class}, {split: how many have none}).

    An image without a class (label < 0) is left out of training and evaluation: as a
    target, -1 crashes the loss or counts as a wrong answer. A val or test split that had
    images but keeps none is refused, not reported as an accuracy of n/a or 0.
    """
    labels = _labels(table)[0]
    splits, unlabelled = {}, {}
    for split in SPLITS:
        ids = table.split_ids(split)
        keep = labels[ids] >= 0
        splits[split], unlabelled[split] = ids[keep], int((~keep).sum())
    if any(unlabelled.values()):
        counts = ", ".join(f"{s} {unlabelled[s]} of {len(table.split_ids(s))}" for s in SPLITS)
        log.warning("images without a class in %s are left out of training and evaluation: %s",
                    _labels_file(table), counts)
    for split in ("val", "test"):
        if unlabelled[split] and not len(splits[split]):
            raise DataError(f"{_labels_file(table)} gives none of the {unlabelled[split]} {split} images "
                            f"a class; the {split} accuracy needs labelled images")
    return splits, unlabelled


def save_checkpoint(model: torch.nn.Module, path) -> None:
    """Save the plain state_dict with reproducible bytes.

    torch.save names the zip's inner folder after the file, so saving straight to a
    random temp name would change the bytes; a buffer always uses "archive".
    Tensors are made contiguous so the file does not record channels_last strides.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def snapshot_name(epoch: int) -> str:
    """A snapshot's file in `train_model`'s snapshots folder (epoch 0: the random init)."""
    return f"epoch_{epoch:03d}.pt"


def decode_images(table: ImageTable, ids, size: int, progress: bool = False) -> torch.Tensor:
    """Decode and resize images once into a uint8 (N, 3, size, size) tensor.

    The resize is the one `load_model`'s checkpoint transform applies (squash, no crop).
    """
    resize = T.Resize((size, size))
    out = torch.empty((len(ids), 3, size, size), dtype=torch.uint8)
    for i, image_id in enumerate(tqdm(ids, desc="decode", disable=not progress, leave=False)):
        out[i] = T.functional.pil_to_tensor(resize(load_image(table.paths[image_id])))
    return out


def augment(batch: torch.Tensor, generator: torch.Generator, size: int | None = None) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to SHIFT pixels, per image; then
    downscaled (antialiased) to `size` pixels where that is smaller."""
    n, c, h, w = batch.shape
    flip = torch.rand(n, generator=generator) < 0.5
    shifts = torch.randint(0, 2 * SHIFT + 1, (n, 2), generator=generator)
    padded = F.pad(batch.float(), (SHIFT, SHIFT, SHIFT, SHIFT), mode="reflect")
    out = torch.empty((n, c, h, w))
    for i in range(n):
        dy, dx = shifts[i].tolist()
        crop = padded[i, :, dy:dy + h, dx:dx + w]
        out[i] = crop.flip(2) if flip[i] else crop
    if size and size < h:
        out = F.interpolate(out, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out


def accuracy(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor,
             normalize, batch_size: int = 256, compute: Compute | None = None) -> float | None:
    if len(images) == 0:
        return None
    compute = compute or Compute()
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            logits = model(normalize(compute.to(images[i:i + batch_size]).float()))
            correct += (logits.argmax(1).cpu() == targets[i:i + batch_size]).sum().item()
    return correct / len(images)


def normalizer(mean, std, device=None):
    mean = (torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255).to(device)
    std = (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255).to(device)

    def normalize(x: torch.Tensor) -> torch.Tensor:
        # uint8-scale input, so this equals ToTensor() then Normalize(mean, std)
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)
    return normalize


def class_count(table: ImageTable) -> int:
    """The number of classes a model trained on `table` predicts."""
    return _labels(table)[1]


def _labels(table: ImageTable):
    if table.labels is None:
        raise DataError(f"{table.root}: the dataset has no class labels to train on")
    labels = np.asarray(table.labels)
    num_classes = len(table.class_names) if table.class_names else int(labels.max(initial=-1)) + 1
    return labels, num_classes


def _labels_file(table: ImageTable):
    """Where the class labels come from (Broden's image_class.csv, the CSV), for messages."""
    return table.meta.get("labels_file", table.root)


def _seed_everything(seed: int, cuda: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if not cuda:  # an op without a deterministic kernel fails instead of drifting
        torch.use_deterministic_algorithms(True)
        return
    # CUDA lacks deterministic kernels for some backward passes (adaptive pooling): warn, don't fail
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def _fmt(x):
    return "n/a" if x is None else f"{x:.3f}"

