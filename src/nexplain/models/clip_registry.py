"""nexplain's own open_clip architectures (`clip_configs/*.json`), made known to open_clip.

Apart from `nexplain.models.clip` (training) so that loading a model, which every rule does,
does not depend on the training code: editing the trainer reruns only the VLM rules.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

CONFIG_DIR = Path(__file__).with_name("clip_configs")
_registered = False


def register_configs() -> list[str]:
    """Make nexplain's model configs, and the timm tower some of them use, known to open_clip
    (once per process); their names."""
    global _registered
    import open_clip

    from nexplain.models import world_cnn

    if not _registered:
        world_cnn.register()
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def _not_random_init_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("No pretrained weights loaded")


@contextlib.contextmanager
def random_init():
    """Build open_clip models without its warning that no weights were loaded: none were asked
    for (a model trained here, or a skeleton on the meta device). Other warnings still show."""
    root = logging.getLogger()  # open_clip logs through the root logger
    root.addFilter(_not_random_init_notice)
    try:
        yield
    finally:
        root.removeFilter(_not_random_init_notice)
