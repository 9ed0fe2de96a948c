"""Extensions: one folder each under `extensions/` (the repo's and the data dir's).

An extension folder may hold `scripts/*.py` (A1111-style scripts and callbacks, loaded by
modules/scripts.py), `javascript/*.js` and `style.css` (added to the page),
`install.py` (run at set-up when the extension is new or changed) and `metadata.ini`
(name, requirements, load order). This module finds them, orders them and records what
went wrong with which one; it imports no extension code itself, and only the standard
library (launch.py uses it before the venv exists).
"""
from __future__ import annotations

import configparser
import heapq
import logging
import re
import subprocess
import traceback
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DISABLE_ALL_CHOICES = ("none", "extra", "all")  # A1111's disable_all_extensions values


def _name_list(value: str | None) -> list[str]:
    """A metadata.ini list: names separated by commas (A1111 also takes spaces: see
    `_expand`), compared in lower case."""
    return [n.strip() for n in (value or "").lower().split(",") if n.strip()]


def _expand(refs: list[str], known) -> list[str]:
    """A1111 separates names by spaces too; a Name with spaces in it ("Alpha Tools") is
    still one name when an extension answers to it (`known(ref)`)."""
    out = []
    for ref in refs:
        out.extend([ref] if known(ref) else re.split(r"\s+", ref))
    return out


@dataclass
class Extension:
    name: str  # the folder name: what the config's disabled list and the UI use
    path: Path
    enabled: bool = True  # the user's choice (not in disabled_extensions); see `active()` for what loads
    builtin: bool = False  # shipped with Kiln (tracked in the repo's extensions/ folder)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)  # metadata.ini, section -> key -> value

    def meta(self, section: str, key: str, default: str | None = None) -> str | None:
        """A metadata.ini value, section and key compared without case (as configparser does keys)."""
        for name, values in self.metadata.items():
            if name.lower() == section.lower():
                for k, v in values.items():
                    if k.lower() == key.lower():
                        return v
        return default

    @property
    def title(self) -> str:
        return self.meta("Extension", "Name") or self.name

    @property
    def canonical_name(self) -> str:
        """What other extensions name this one by in Requires/Before/After (A1111: Name, lower case)."""
        return self.title.strip().lower()

    def answers_to(self, ref: str) -> bool:
        return ref in (self.canonical_name, self.name.lower())

    @property
    def requires(self) -> list[str]:
        return _name_list(self.meta("Extension", "Requires"))

    @property
    def before(self) -> list[str]:
        return _name_list(self.meta("Extension", "Before"))

    @property
    def after(self) -> list[str]:
        return _name_list(self.meta("Extension", "After"))

    def script_files(self) -> list[Path]:
        folder = self.path / "scripts"
        return sorted(folder.glob("*.py")) if folder.is_dir() else []

    def javascript_files(self) -> list[Path]:
        folder = self.path / "javascript"
        return sorted(folder.glob("*.js")) if folder.is_dir() else []

    def stylesheet(self) -> Path | None:
        css = self.path / "style.css"
        return css if css.is_file() else None

    def installer(self) -> Path | None:
        script = self.path / "install.py"
        return script if script.is_file() else None


def read_metadata(folder: Path) -> dict[str, dict[str, str]]:
    ini = folder / "metadata.ini"
    if not ini.is_file():
        return {}
    # inline "; comments" as well (A1111's examples annotate values that way)
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        parser.read(ini, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as e:
        log.warning("%s: unreadable metadata.ini (%s)", folder.name, e)
        return {}
    return {section: dict(parser[section]) for section in parser.sections()}


def shipped_names(repo_root: Path) -> set[str] | None:
    """Names of the extensions tracked in the repo's git (the ones shipped with Kiln; the
    ones a user installs there are ignored by git). None when the repo is not a git
    checkout or git is missing: then a folder without its own .git counts as shipped."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", "extensions"], cwd=repo_root, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return {p.split("/")[1] for p in out.stdout.split("\0") if p.count("/") >= 2}


def discover(folders: list[Path], disabled: set[str] = frozenset(), builtin_folder: Path | None = None,
             shipped: set[str] | None = None) -> list[Extension]:
    """Every sub-folder of `folders` (a name seen twice: the first wins), in name order.
    In `builtin_folder` the names in `shipped` are built in (all of them when `shipped` is
    None, except git checkouts of their own)."""
    found: dict[str, Extension] = {}
    seen_folders = set()
    for folder in folders:
        if not folder.is_dir() or folder.resolve() in seen_folders:
            continue
        seen_folders.add(folder.resolve())
        in_builtin = builtin_folder is not None and folder.resolve() == Path(builtin_folder).resolve()
        for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            if path.name in found:
                continue
            builtin = in_builtin and (path.name in shipped if shipped is not None else not (path / ".git").exists())
            found[path.name] = Extension(path.name, path, enabled=path.name not in disabled, builtin=builtin,
                                         metadata=read_metadata(path))
    return list(found.values())


def active(extensions: list[Extension], disable_all: str = "none") -> list[Extension]:
    """The extensions that load: enabled ones, none with disable_all "all", only built-in
    ones with "extra" (A1111's setting, for finding which extension breaks things)."""
    if disable_all == "all":
        return []
    return [e for e in extensions if e.enabled and (e.builtin or disable_all != "extra")]


# ---- load order -----------------------------------------------------------------------------
@dataclass
class Problem:
    extension: str  # folder name
    where: str  # "metadata.ini"
    message: str


def _stable_topological(nodes: list, edges: dict[int, set[int]], key) -> tuple[list[int], list[int]]:
    """Kahn's algorithm over node indexes, always taking the smallest `key` that is free.
    Returns (order, the indexes that were stuck in a cycle, in the order they were forced)."""
    indegree = {i: 0 for i in range(len(nodes))}
    for src, dsts in edges.items():
        for d in dsts:
            indegree[d] += 1
    ready = [(key(i), i) for i, n in indegree.items() if n == 0]
    heapq.heapify(ready)
    order, forced, done = [], [], set()
    while len(order) < len(nodes):
        if not ready:  # a cycle: break it at its smallest member
            i = min((i for i in indegree if i not in done), key=key)
            forced.append(i)
            indegree[i] = 0
            heapq.heappush(ready, (key(i), i))
        _, i = heapq.heappop(ready)
        if i in done:
            continue
        done.add(i)
        order.append(i)
        for d in sorted(edges.get(i, ())):
            if d in done:
                continue
            indegree[d] -= 1
            if indegree[d] == 0:
                heapq.heappush(ready, (key(d), d))
    return order, forced


def load_order(extensions: list[Extension], installed: list[Extension] | None = None) -> tuple[list[Extension], list[Problem]]:
    """Order the active `extensions`: each after the ones it Requires or loads After, before
    the ones it loads Before, otherwise by name. A missing requirement or a cycle is a
    Problem (reported to the user), never fatal: the extension still loads."""
    exts = list(extensions)
    problems: list[Problem] = []

    def find(ref: str) -> int | None:
        return next((i for i, e in enumerate(exts) if e.answers_to(ref)), None)

    def known(ref: str) -> bool:
        return any(e.answers_to(ref) for e in exts + list(installed or []))

    edges: dict[int, set[int]] = {}
    for i, ext in enumerate(exts):
        requires, after, before = (_expand(refs, known) for refs in (ext.requires, ext.after, ext.before))
        for ref in requires:
            j = find(ref)
            if j is None:
                other = next((e for e in installed or [] if e.answers_to(ref)), None)
                why = "which is disabled" if other is not None else "which is not installed"
                problems.append(Problem(ext.name, "metadata.ini", f"{ext.title} requires {ref}, {why}"))
        for ref in requires + after:  # Before/After naming an absent extension: nothing to order
            j = find(ref)
            if j is not None and j != i:
                edges.setdefault(j, set()).add(i)
        for ref in before:
            j = find(ref)
            if j is not None and j != i:
                edges.setdefault(i, set()).add(j)
    order, forced = _stable_topological(exts, edges, key=lambda i: (exts[i].name.lower(), exts[i].name))
    if forced:
        names = ", ".join(sorted(exts[i].name for i in range(len(exts)) if _in_cycle(i, edges)))
        for i in range(len(exts)):
            if _in_cycle(i, edges):
                problems.append(Problem(exts[i].name, "metadata.ini",
                                        f"load order cycle (Before/After/Requires) among: {names}; loaded by name"))
    return [exts[i] for i in order], problems


def _in_cycle(start: int, edges: dict[int, set[int]]) -> bool:
    stack, seen = list(edges.get(start, ())), set()
    while stack:
        n = stack.pop()
        if n == start:
            return True
        if n not in seen:
            seen.add(n)
            stack.extend(edges.get(n, ()))
    return False


def script_order(extensions: list[Extension]) -> tuple[list[tuple[Extension, Path]], list[Problem]]:
    """The script files of `extensions` (already in load order) in the order to load them:
    extension order, then file name, adjusted by A1111's optional per-script sections
    (`[scripts/foo.py]` with Before/After/Requires naming another extension or one of its
    scripts as `extension/foo.py`; a `[scripts]` section's Requires applies to every script)."""
    items = [(ext, path) for ext in extensions for path in ext.script_files()]
    problems: list[Problem] = []

    def script_name(k: int) -> str:
        ext, path = items[k]
        return f"{ext.canonical_name}/{path.name.lower()}"

    def find(ref: str) -> list[int]:
        """A script by `extension/file.py`, or every script of an extension."""
        return [k for k, (ext, path) in enumerate(items)
                if script_name(k) == ref or f"{ext.name.lower()}/{path.name.lower()}" == ref or ext.answers_to(ref)]

    def known(ref: str) -> bool:
        return bool(find(ref))

    edges: dict[int, set[int]] = {}
    for k, (ext, path) in enumerate(items):
        section = f"scripts/{path.name}"
        requires = _expand(_name_list(ext.meta(section, "Requires")) + _name_list(ext.meta("scripts", "Requires")),
                           known)
        for ref in requires:
            if not find(ref):
                problems.append(Problem(ext.name, "metadata.ini",
                                        f"scripts/{path.name} requires {ref}, which is not loaded"))
        for ref in requires + _expand(_name_list(ext.meta(section, "After")), known):
            for j in find(ref):
                if j != k:
                    edges.setdefault(j, set()).add(k)
        for ref in _expand(_name_list(ext.meta(section, "Before")), known):
            for j in find(ref):
                if j != k:
                    edges.setdefault(k, set()).add(j)
    order, forced = _stable_topological(items, edges, key=lambda k: k)
    for k in forced:
        problems.append(Problem(items[k][0].name, "metadata.ini",
                                f"scripts/{items[k][1].name}: load order cycle; loaded in folder order"))
    return [items[k] for k in order], problems


# ---- errors -----------------------------------------------------------------------------------
@dataclass
class ExtensionError:
    extension: str  # the extension's name ("" for Kiln's own scripts)
    where: str  # "import scripts/foo.py", "process", "on_ui_tabs", "install.py", "metadata.ini" ...
    message: str  # the traceback or the message


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

    def add(self, extension: str, where: str, message: str) -> None:
        """Record a problem that is not an exception (a missing requirement, a failed install.py),
        once: finding extensions again reports the same problems again."""
        if any(e == ExtensionError(extension, where, message) for e in self.errors):
            return
        log.error("extension %s: %s: %s", extension or "?", where, message)
        self.errors.append(ExtensionError(extension, where, message))

    def for_extension(self, name: str) -> list[ExtensionError]:
        return [e for e in self.errors if e.extension == name]


# ---- the set Kiln loads ----------------------------------------------------------------------
def extension_folders(repo_root: Path, data_dir: Path) -> list[Path]:
    """Where extensions live: the repo's extensions/ (shipped ones, and installed ones when
    the data dir is the repo) and <data-dir>/extensions/ (installed ones)."""
    folders = [Path(repo_root) / "extensions", Path(data_dir) / "extensions"]
    return [f for i, f in enumerate(folders) if f.resolve() not in {g.resolve() for g in folders[:i]}]


def install_folder(data_dir: Path) -> Path:
    """Where "Install from URL" puts new extensions."""
    return Path(data_dir) / "extensions"


def installed(repo_root: Path, data_dir: Path, disabled: list[str] | set[str] = ()) -> list[Extension]:
    return discover(extension_folders(repo_root, data_dir), set(disabled), builtin_folder=Path(repo_root) / "extensions",
                    shipped=shipped_names(Path(repo_root)))


def load(repo_root: Path, data_dir: Path, disabled: list[str] | set[str], disable_all: str,
         errors: ErrorLog) -> tuple[list[Extension], list[Extension]]:
    """(every installed extension, the active ones in load order); order problems go to `errors`."""
    everything = installed(repo_root, data_dir, disabled)
    ordered, problems = load_order(active(everything, disable_all), everything)
    for p in problems:
        errors.add(p.extension, p.where, p.message)
    return everything, ordered
