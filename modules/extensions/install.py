"""Installing extensions: from a git URL or a local folder, and running their install.py.

Plain functions over folders (no UI): the Extensions tab and launch.py call them. Only the
standard library: launch.py runs install.py files with the system Python before the
server starts.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from modules.extensions import git as extension_git
from modules.extensions.discovery import Extension, ErrorLog

INSTALL_TIMEOUT_S = 1800  # install.py usually pip-installs; a hung one must not block start-up forever
STAMPS_FILE = Path(".cache") / "extension-installs.json"  # under the data dir
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")
_SCP_URL = re.compile(r"^[\w.-]+@[\w.-]+:[\w./~-]+$")  # git@github.com:user/repo.git


class InstallError(Exception):
    """Installing cannot go on; the message says why, for the person."""


ACCESS_REFUSED = ("Installing, updating, enabling or disabling extensions is turned off because Kiln listens "
                  "beyond this computer (--listen or --server-name): anyone who reaches the page could run code "
                  "on it. Start Kiln with --enable-insecure-extension-access to allow it.")


def check_access(allowed: bool) -> None:
    if not allowed:
        raise InstallError(ACCESS_REFUSED)


# ---- install from a URL or a folder ---------------------------------------------------------------
def folder_name_for(source: str) -> str:
    """The folder name an install gets when none is given: the repository's or folder's name."""
    tail = source.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail[:-4] if tail.endswith(".git") else tail


def _is_git_url(source: str) -> bool:
    if _SCP_URL.match(source):
        return True
    url = urlparse(source)
    return url.scheme in ("https", "http", "git", "ssh", "file") and bool(url.netloc or url.scheme == "file") \
        and bool(url.path.strip("/"))


@dataclass
class InstallResult:
    name: str
    path: Path
    message: str  # what happened, for the person
    install_output: str = ""  # install.py's output, when it ran
    install_ok: bool = True


def install(source: str, extensions_dir: Path, name: str = "", branch: str = "", *, allowed: bool = True,
            python: str | None = None, stamps: "InstallStamps | None" = None) -> InstallResult:
    """Install an extension into `extensions_dir/<name>`: a git URL or a local repository is
    cloned (`git clone --depth 1`), a plain local folder is copied. Then its install.py runs
    (when it has one and `python` is given). InstallError, with a message, when the source is
    not usable, the folder exists, or git fails; nothing is left behind then."""
    check_access(allowed)
    source = (source or "").strip()
    name = (name or "").strip()
    branch = (branch or "").strip()
    if not source:
        raise InstallError("Give the extension's git URL or a local folder.")
    local = Path(source).expanduser()
    is_local = local.is_absolute() and local.exists()
    if not is_local and not _is_git_url(source):
        raise InstallError(f"{source!r} is neither a git URL (https://..., git@host:...) nor an existing folder "
                           f"(give its full path).")
    if is_local and not local.is_dir():
        raise InstallError(f"{source} is a file, not an extension folder.")
    name = name or folder_name_for(source)
    if not _NAME.match(name) or name in (".", ".."):
        raise InstallError(f"{name!r} cannot be a folder name: use letters, digits, '.', '_', '-' and spaces.")
    if branch.startswith("-"):
        raise InstallError(f"{branch!r} is not a branch name.")
    extensions_dir = Path(extensions_dir)
    dest = extensions_dir / name
    if dest.exists():
        raise InstallError(f"An extension folder named {name!r} already exists ({dest}); choose another name.")
    extensions_dir.mkdir(parents=True, exist_ok=True)
    # work in a hidden folder (discovery skips dot-folders) and rename at the end: a failed
    # clone or copy never leaves a half extension behind
    staging = extensions_dir / f".installing-{name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        if is_local and not extension_git.is_checkout(local):
            if branch:
                raise InstallError(f"{source} is not a git repository: a branch cannot be chosen.")
            shutil.copytree(local, staging, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), symlinks=True)
            how = f"copied from {local}"
        else:
            try:
                extension_git.clone(str(local) if is_local else source, staging, branch or None)
            except extension_git.GitError as e:
                raise InstallError(f"git clone {source} failed: {e}") from None
            how = f"cloned from {source}" + (f" ({branch})" if branch else "")
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = InstallResult(name, dest, f"Installed {name} into {dest}, {how}.")
    ext = Extension(name, dest)
    if python and stamps is not None and ext.installer():
        run = run_installer(ext, python, stamps)
        result.install_output, result.install_ok = run.output, run.ok
        result.message += (" Its install.py ran." if run.ok else
                           f" Its install.py failed (exit {run.returncode}): see the output below.")
    return result


# ---- install.py ------------------------------------------------------------------------------------
def install_stamp(ext: Extension) -> str | None:
    """What install.py depends on: its own text, and the checkout's HEAD (a git extension)
    or the size and time of the folder's top-level files (a plain one). None: no install.py."""
    script = ext.installer()
    if script is None:
        return None
    digest = hashlib.sha256(script.read_bytes())
    version = extension_git.version(ext.path)
    if version.commit_hash:
        digest.update(version.commit_hash.encode())
    else:
        for p in sorted(ext.path.iterdir()):
            if p.is_file():
                st = p.stat()
                digest.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()


@dataclass
class InstallStamps:
    """Which install.py ran successfully for which state of its extension, and the last
    failures (shown in the Extensions tab), kept in a JSON file in the data dir."""
    path: Path
    done: dict[str, str] = field(default_factory=dict)  # extension name -> stamp of the last successful run
    failed: dict[str, str] = field(default_factory=dict)  # extension name -> message of the last failed run

    @classmethod
    def load(cls, data_dir: Path) -> "InstallStamps":
        path = Path(data_dir) / STAMPS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, dict(data.get("done", {})), dict(data.get("failed", {})))
        except (OSError, ValueError, AttributeError):
            return cls(path)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"done": self.done, "failed": self.failed}, indent=2), encoding="utf-8")
        tmp.replace(self.path)


@dataclass
class InstallerRun:
    name: str
    ran: bool  # False: unchanged since its last successful run, skipped
    ok: bool = True
    returncode: int = 0
    output: str = ""


def run_installer(ext: Extension, python: str, stamps: InstallStamps, env: dict[str, str] | None = None,
                  timeout: float = INSTALL_TIMEOUT_S, force: bool = False) -> InstallerRun:
    """Run the extension's install.py with `python`, in the extension's folder, unless it
    ran successfully for this same state before. A failure is recorded (and runs again
    next time); it never raises."""
    stamp = install_stamp(ext)
    if stamp is None or (not force and stamps.done.get(ext.name) == stamp):
        return InstallerRun(ext.name, ran=False)
    root = Path(__file__).resolve().parents[2]  # the repo root, where launch.py is
    run_env = dict(os.environ if env is None else env)
    # A1111's install.py files `import launch` (run_pip, is_installed): launch.py is in the repo root
    run_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), run_env.get("PYTHONPATH", "")) if p)
    started = time.time()
    try:
        out = subprocess.run([python, str(ext.installer())], cwd=ext.path, env=run_env, capture_output=True,
                             text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        code, output = out.returncode, (out.stdout or "") + (out.stderr or "")
    except subprocess.TimeoutExpired as e:
        code, output = -1, _text(e.stdout) + _text(e.stderr) + f"\n(stopped after {timeout:.0f} s)"
    except OSError as e:
        code, output = -1, f"could not run {python}: {e}"
    run = InstallerRun(ext.name, ran=True, ok=code == 0, returncode=code, output=output)
    if run.ok:
        stamps.done[ext.name] = stamp
        stamps.failed.pop(ext.name, None)
    else:
        stamps.done.pop(ext.name, None)
        stamps.failed[ext.name] = f"install.py failed (exit {code}) after {time.time() - started:.0f} s:\n{output[-4000:]}"
    stamps.save()
    return run


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def run_installers(extensions: list[Extension], python: str, data_dir: Path, log=print,
                   env: dict[str, str] | None = None) -> list[InstallerRun]:
    """launch.py's set-up step: install.py of each extension that is new or changed since
    its last successful run. Output is logged; a failure is logged with the extension's
    name and the next one runs (start-up goes on)."""
    stamps = InstallStamps.load(data_dir)
    runs = []
    for ext in extensions:
        if ext.installer() is None:
            continue
        run = run_installer(ext, python, stamps, env=env)
        runs.append(run)
        if not run.ran:
            continue
        for line in run.output.rstrip().splitlines():
            log(f"[{ext.name}] {line}")
        if run.ok:
            log(f"extension {ext.name}: install.py done")
        else:
            log(f"extension {ext.name}: install.py FAILED (exit {run.returncode}); Kiln starts without it "
                f"being set up. It runs again at the next start.")
    return runs


def report_failed_installs(data_dir: Path, errors: ErrorLog, names: set[str] | None = None) -> None:
    """Put the last failed install.py runs into the error log (the Extensions tab shows them)."""
    for name, message in InstallStamps.load(data_dir).failed.items():
        if names is None or name in names:
            errors.add(name, "install.py", message)


# ---- enabling, updating -------------------------------------------------------------------------------
def set_enabled(options, enabled: dict[str, bool], disable_all: str | None = None) -> list[str]:
    """Update `options.disabled_extensions` (A1111's setting) from name -> enabled; names not
    given keep their state. Returns the new disabled list. The caller saves the options."""
    from modules.extensions.discovery import DISABLE_ALL_CHOICES

    disabled = {n for n in options.disabled_extensions if isinstance(n, str)}
    for name, on in enabled.items():
        (disabled.discard if on else disabled.add)(name)
    options.disabled_extensions = sorted(disabled)
    if disable_all is not None:
        if disable_all not in DISABLE_ALL_CHOICES:
            raise InstallError(f"disable_all_extensions must be one of {', '.join(DISABLE_ALL_CHOICES)}, "
                               f"got {disable_all!r}")
        options.disable_all_extensions = disable_all
    return options.disabled_extensions


def update(ext: Extension) -> str:
    """Fast-forward a git extension to its fetched upstream; the message says what happened."""
    if ext.builtin:
        return f"{ext.name}: shipped with Kiln, updated with Kiln itself"
    try:
        return f"{ext.name}: updated to {extension_git.fast_forward(ext.path)}"
    except extension_git.GitError as e:
        return f"{ext.name}: not updated: {e}"


def default_python() -> str:
    return sys.executable
