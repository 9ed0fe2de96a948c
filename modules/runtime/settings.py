"""The settings service: the saved options (config.json, A1111's names), the settings
extensions declare, and the one way anything changes them.

The API, the Settings tab, the quick settings and A1111's `shared.opts` all read and
write through here, so a bad value is refused the same way everywhere."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from modules.generation.request import Limits
from modules.runtime import option_rules
from modules.runtime.options import Options


class Settings:
    def __init__(self, path: Path):
        self.path = path
        self.options = Options.load(path)
        # extensions' settings, declared with shared.opts.add_option: key -> OptionInfo (A1111's
        # opts.data_labels): the Settings tab shows them and set() checks values against them
        self.declared: dict[str, Any] = {}
        # set by the runtime: loads a newly chosen checkpoint (through the job queue) and
        # returns its name, or raises CheckpointError; set() calls it before saving anything
        self.switch_checkpoint: Callable[[str], str] | None = None
        # settings that may not change here, and why (the runtime locks the extension
        # settings when the server listens beyond localhost, as the Extensions tab does)
        self.locked: dict[str, str] = {}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.options.save(self.path)

    def set(self, values: dict) -> dict[str, tuple]:
        """Change settings (A1111's names) and save them. Every value is checked before any
        is applied, so a bad one raises OptionError (a checkpoint that is not there,
        CheckpointError) and changes nothing. A new sd_model_checkpoint is loaded first.
        Returns name -> (old value, new value) of what changed."""
        declared = {key: getattr(info, "default", None) for key, info in self.declared.items()}
        for key, why in self.locked.items():
            if key in values and values[key] != getattr(self.options, key):
                raise option_rules.OptionError(key, why)
        change = option_rules.check(self.options, values, declared)
        changed: dict[str, tuple] = {}
        if change.checkpoint is not None:
            before = self.options.sd_model_checkpoint
            self.switch_checkpoint(change.checkpoint)
            if before != self.options.sd_model_checkpoint:
                changed["sd_model_checkpoint"] = (before, self.options.sd_model_checkpoint)
        for key, value in change.fields.items():
            before = getattr(self.options, key)
            if before != value:
                changed[key] = (before, value)
            setattr(self.options, key, value)
        for key, value in change.extra.items():
            before = self.options.extra.get(key, declared.get(key))
            if before != value:
                changed[key] = (before, value)
            self.options.extra[key] = value
        self.save()
        return changed

    def value(self, key: str):
        """A setting's current value: Options' field, else the saved extension value, else
        the default its extension declared (None for a name nobody declared)."""
        if key in option_rules.defaults():
            return getattr(self.options, key)
        if key in self.options.extra:
            return self.options.extra[key]
        return getattr(self.declared.get(key), "default", None)

    @property
    def limits(self) -> Limits:
        o = self.options
        return Limits(o.max_pixels, o.max_steps, o.max_batch_size, o.max_batch_count)
