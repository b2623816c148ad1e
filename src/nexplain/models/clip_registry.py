"""nexplain's own open_clip architectures (`clip_configs/*.json`), made known to open_clip.

Apart from `nexplain.models.clip` (training) so that loading a model, which every rule does,
does not depend on the training code: editing the trainer reruns only the VLM rules.
"""

from __future__ import annotations

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
