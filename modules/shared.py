"""A1111's `modules.shared`, small: what simple extension scripts touch.

- `opts`: settings by A1111's names, read from (and written to) the Runtime's Options;
  an A1111 name Kiln has no setting for reads A1111's default (`A1111_DEFAULTS`), an
  extension's own setting (added with `opts.add_option`) its default until set.
- `state`: the running job (interrupted, skipped, job_count, job_no, sampling_step,
  sampling_steps, textinfo); `state.job_count = n` tells the progress bar how many
  generations a script will run; `state.interrupt()` / `state.skip()`.
- `cmd_opts`: the command-line flags (their defaults; data_dir is the runtime's).
- `sd_model`: the loaded model (Kiln's LoadedModel), or None.

Everything is looked up in the runtime the edge was handed at start-up
(modules/scripts.py's attach; `script_callbacks.registry.runtime`); this module holds no
state of its own.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from modules import cmd_args, script_callbacks

# A1111 option names Kiln has no setting for, and the value A1111 uses by default
A1111_DEFAULTS: dict[str, Any] = {
    "samples_format": "png", "grid_format": "png", "grid_extended_filename": False, "grid_only_if_multiple": True,
    "return_grid": True, "CLIP_stop_at_last_layers": 1, "eta_noise_seed_delta": 0, "sd_vae": "Automatic",
    "save_images_add_number": True, "samples_filename_pattern": "", "directories_filename_pattern": "[date]",
    "export_for_4chan": False, "enable_pnginfo": True, "img2img_fix_steps": False, "randn_source": "CPU",
    "disabled_extensions": [], "disable_all_extensions": "none", "hide_samplers": [],
}


def _runtime():
    runtime = script_callbacks.registry.runtime
    if runtime is None:
        raise RuntimeError("no Kiln runtime has loaded the scripts")
    return runtime


class OptionInfo:
    """An extension's setting (A1111's OptionInfo): default, label, and where it shows."""

    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None,
                 section=None, refresh=None, **kwargs):
        self.default, self.label, self.component, self.component_args = default, label, component, component_args
        self.onchange, self.section, self.refresh = onchange, section, refresh

    def info(self, text):  # A1111's fluent helpers: accepted, shown nowhere yet
        return self

    def needs_restart(self):
        return self

    def needs_reload_ui(self):
        return self


class Options:
    """`opts.name` reads Options' field, or config.json's extra value, or the default."""

    @property
    def data_labels(self) -> dict:
        """Extension settings: key -> OptionInfo. Kept by the runtime's settings service,
        whose Settings tab shows them and which checks their values against their defaults."""
        return _runtime().settings.declared

    def _known(self, options) -> set[str]:
        return {f.name for f in dataclasses.fields(options) if f.name != "extra"}

    def __getattr__(self, key: str):
        if key.startswith("__"):
            raise AttributeError(key)
        options = _runtime().options
        if key in self._known(options):
            return getattr(options, key)
        if key in options.extra:
            return options.extra[key]
        if key in self.data_labels:
            return self.data_labels[key].default
        if key in A1111_DEFAULTS:
            return A1111_DEFAULTS[key]
        raise AttributeError(f"no setting named {key!r}")

    def __setattr__(self, key: str, value) -> None:
        options = _runtime().options
        if key in self._known(options):
            setattr(options, key, value)
        else:
            options.extra[key] = value

    def get(self, key: str, default=None):
        try:
            return getattr(self, key)
        except AttributeError:
            return default

    def set(self, key: str, value) -> bool:
        setattr(self, key, value)
        return True

    @property
    def data(self) -> dict:
        """Every setting by name (a copy: change settings with opts.name = value)."""
        options = _runtime().options
        out = dict(A1111_DEFAULTS)
        out.update({k: v.default for k, v in self.data_labels.items()})
        out.update({k: v for k, v in dataclasses.asdict(options).items() if k != "extra"})
        out.update(options.extra)
        return out

    def add_option(self, key: str, info: OptionInfo) -> None:
        """Declare an extension's setting (from an on_ui_settings callback)."""
        self.data_labels[key] = info

    def onchange(self, key: str, func, call: bool = True) -> None:
        """Accepted and not called: settings change through the runtime's settings.set (the API,
        the Settings tab), which has no per-setting change event to forward yet."""

    def save(self, filename: str | None = None) -> None:
        _runtime().settings.save()


class State:
    """The running job (A1111's shared.state), read from the Runtime's progress."""

    @property
    def _progress(self):
        return _runtime().progress

    @property
    def _control(self):
        return _runtime().control

    @property
    def interrupted(self) -> bool:
        control = self._control
        return bool(control and control.interrupted)

    @interrupted.setter
    def interrupted(self, value: bool) -> None:
        if self._control:
            self._control.interrupted = bool(value)

    @property
    def skipped(self) -> bool:
        control = self._control
        return bool(control and control.skipped)

    @skipped.setter
    def skipped(self, value: bool) -> None:
        if self._control:
            self._control.skipped = bool(value)

    @property
    def job_count(self) -> int:
        return self._progress.job_count

    @job_count.setter
    def job_count(self, value: int) -> None:
        self._progress.job_count = max(1, int(value))

    @property
    def job_no(self) -> int:
        return self._progress.job_no

    @job_no.setter
    def job_no(self, value: int) -> None:
        self._progress.job_no = int(value)

    @property
    def job(self) -> str:
        return self._progress.job or ""

    @job.setter
    def job(self, value: str) -> None:
        self._progress.job = value

    @property
    def sampling_step(self) -> int:
        return self._progress.step

    @property
    def sampling_steps(self) -> int:
        return self._progress.total

    @property
    def textinfo(self):
        return self._progress.textinfo

    @textinfo.setter
    def textinfo(self, value) -> None:
        self._progress.textinfo = value

    @property
    def current_image(self):
        return self._progress.preview

    def interrupt(self) -> None:
        _runtime().interrupt()

    def skip(self) -> None:
        _runtime().skip()

    def nextjob(self) -> None:
        progress = self._progress
        progress.job_no = min(progress.job_no + 1, max(progress.job_count - 1, 0))
        progress.step = 0

    def dict(self) -> dict:
        return self._progress.state()


opts = Options()
state = State()


def __getattr__(name: str):
    """`shared.sd_model` and `shared.cmd_opts`, looked up when read."""
    if name == "sd_model":
        return _runtime().model
    if name == "cmd_opts":
        args = cmd_args.parse([])
        runtime = script_callbacks.registry.runtime
        args.data_dir = str(runtime.data_dir) if runtime else None
        return args
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["opts", "state", "OptionInfo", "Options", "State", "A1111_DEFAULTS"]
