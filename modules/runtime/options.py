"""User settings, persisted to config.json (A1111's names where A1111 has the setting)."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class Options:
    sd_model_checkpoint: str = ""  # title or name; "" = the demo model / first found
    outdir_samples: str = "outputs"
    samples_save: bool = True
    grid_save: bool = True
    default_prediction_type: str = "epsilon"  # for files that do not say (A1111 reads a .yaml)
    max_pixels: int = 2048 * 2048
    max_steps: int = 150
    max_batch_size: int = 8
    max_batch_count: int = 100
    show_progress_every_n_steps: int = 5  # live preview every N sampler steps; 0 = off
    live_previews_enable: bool = True
    disabled_extensions: list = field(default_factory=list)  # folder names; applies after a UI reload
    disable_all_extensions: str = "none"  # "none" | "extra" (only built-in ones load) | "all" (none load)
    # ---- prompt and conditioning (A1111's names and defaults)
    emphasis: str = "Original"  # conditioning.EMPHASIS_MODES
    CLIP_stop_at_last_layers: int = 1  # clip skip for API requests that do not override it
    sdxl_crop_top: int = 0
    sdxl_crop_left: int = 0
    sdxl_refiner_low_aesthetic_score: float = 2.5
    sdxl_refiner_high_aesthetic_score: float = 6.0
    tiled_vae: bool = False  # decode/encode in tiles (large images; automatic after an out-of-memory)
    channels_last: bool = False  # channels_last memory format for the UNet and VAE (applies at the next load)
    sd_checkpoint_cache: int = 0  # checkpoints kept in RAM for fast switching back (A1111's name)
    extra: dict = field(default_factory=dict)  # settings of extensions and later features

    @classmethod
    def load(cls, path: Path) -> "Options":
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return cls()
        known = {f.name for f in fields(cls)}
        options = cls(**{k: v for k, v in data.items() if k in known and k != "extra"})
        options.extra = {k: v for k, v in data.items() if k not in known}
        return options

    def save(self, path: Path) -> None:
        data = {k: v for k, v in asdict(self).items() if k != "extra"} | self.extra
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        tmp.replace(path)
