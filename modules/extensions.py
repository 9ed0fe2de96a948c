"""Extensions: one folder each under `extensions/` (the repo's and the data dir's).

An extension folder may hold `scripts/*.py` (A1111-style scripts and callbacks, loaded by
modules/scripts.py), `javascript/*.js` and `style.css` (added to the page),
`install.py` (run at set-up when the extension is new or changed) and `metadata.ini`
(name, requirements, load order). This module finds them and records what went wrong
with which one; it imports no extension code itself.
"""
from __future__ import annotations

import configparser
import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Extension:
    name: str  # the folder name: what the config's disabled list and the UI use
    path: Path
    enabled: bool = True
    builtin: bool = False  # shipped with Kiln (in the repo's extensions/ folder)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)  # metadata.ini, section -> key -> value

    @property
    def title(self) -> str:
        return self.metadata.get("Extension", {}).get("Name") or self.name

    def script_files(self) -> list[Path]:
        folder = self.path / "scripts"
        return sorted(folder.glob("*.py")) if folder.is_dir() else []

    def javascript_files(self) -> list[Path]:
        folder = self.path / "javascript"
        return sorted(folder.glob("*.js")) if folder.is_dir() else []

    def stylesheet(self) -> Path | None:
        css = self.path / "style.css"
        return css if css.is_file() else None


def read_metadata(folder: Path) -> dict[str, dict[str, str]]:
    ini = folder / "metadata.ini"
    if not ini.is_file():
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(ini, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as e:
        log.warning("%s: unreadable metadata.ini (%s)", folder.name, e)
        return {}
    return {section: dict(parser[section]) for section in parser.sections()}


def discover(folders: list[Path], disabled: set[str] = frozenset(), builtin_folder: Path | None = None) -> list[Extension]:
    """Every sub-folder of `folders` (a name seen twice: the first wins), in name order."""
    found: dict[str, Extension] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            if path.name in found:
                continue
            found[path.name] = Extension(path.name, path, enabled=path.name not in disabled,
                                         builtin=builtin_folder is not None and folder == builtin_folder,
                                         metadata=read_metadata(path))
    return list(found.values())


@dataclass
class ExtensionError:
    extension: str  # the extension's name ("" for Kiln's own scripts)
    where: str  # "import scripts/foo.py", "process", "on_ui_tabs" ...
    message: str  # the traceback


@dataclass
class ErrorLog:
    """What failed in which extension, for the Extensions tab and the log. The failing
    hook is skipped and the job goes on."""
    errors: list[ExtensionError] = field(default_factory=list)

    def report(self, extension: str, where: str) -> None:
        """Call from an `except` block: records and logs the current exception."""
        text = traceback.format_exc()
        log.error("extension %s failed in %s:\n%s", extension or "?", where, text)
        self.errors.append(ExtensionError(extension, where, text))

    def for_extension(self, name: str) -> list[ExtensionError]:
        return [e for e in self.errors if e.extension == name]
