"""Kiln's extension manager: which extensions are installed and which load (in load
order), what failed in which, and the changes a person makes from the page or the API:
install, enable/disable, update, restart.

It finds extensions; it does not run their code. Loading their scripts and callbacks is
the A1111 edge's job (modules/scripts.py), handed the active list at start-up."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

from modules.extensions import discovery, git, install
from modules.extensions.discovery import ErrorLog, Extension
from modules.runtime.jobs import JobQueue
from modules.runtime.settings import Settings

log = logging.getLogger(__name__)


class ExtensionManager:
    def __init__(self, repo_root: Path, data_dir: Path, settings: Settings, jobs: JobQueue, *,
                 access: bool = True, disable_all: str | None = None, restart_command: list[str] | None = None):
        self.repo_root, self.data_dir = repo_root, data_dir
        self.settings, self.jobs = settings, jobs
        # extensions may be installed, updated, enabled from the page (False when the server
        # listens beyond localhost without --enable-insecure-extension-access)
        self.access = access
        self._disable_all = disable_all  # --disable-all-extensions / --disable-extra-extensions override the setting
        self.restart_command = restart_command  # argv that starts this server again ("Apply and restart UI")
        self.errors = ErrorLog()  # what failed in which extension (the Extensions tab shows it)
        self.loaded: list[Extension] = []  # every installed one at start-up, with its enabled state
        self.active: list[Extension] = []  # the ones that load, in load order
        self.restart_pending = False  # installed or enabled/disabled something since the start
        self.before_restart: list[Callable[[], None]] = []  # the edge: extensions' on_script_unloaded
        self.scan()

    @property
    def disable_all(self) -> str:
        return self._disable_all or self.settings.options.disable_all_extensions

    def scan(self) -> None:
        """Find the extensions and which of them load, in load order (metadata.ini); load
        order problems and failed install.py runs go to the error log."""
        self.loaded, self.active = discovery.load(self.repo_root, self.data_dir,
                                                  self.settings.options.disabled_extensions, self.disable_all,
                                                  self.errors)
        install.report_failed_installs(self.data_dir, self.errors, {e.name for e in self.active})

    def installed(self) -> list[Extension]:
        """What is on disk now, with the saved enabled state (it differs from `loaded`
        after an install or "Apply" until the restart)."""
        return discovery.installed(self.repo_root, self.data_dir, self.settings.options.disabled_extensions)

    def install(self, source: str, name: str = "", branch: str = "") -> install.InstallResult:
        """Install from a git URL or a local folder into <data-dir>/extensions, run its
        install.py; it loads after a restart. InstallError with a message when refused."""
        result = install.install(source, discovery.install_folder(self.data_dir), name, branch, allowed=self.access,
                                 python=sys.executable, stamps=install.InstallStamps.load(self.data_dir))
        self.restart_pending = True
        return result

    def check_updates(self) -> list[git.UpdateCheck]:
        install.check_access(self.access)
        return [git.check_for_update(e.name, e.path) for e in self.installed()
                if not e.builtin and git.is_checkout(e.path)]

    def apply(self, enabled: dict[str, bool], disable_all: str | None = None, update: list[str] = ()) -> list[str]:
        """Save which extensions are enabled (config.json) and fast-forward the ones in
        `update`; all of it takes effect at the next restart. Returns messages."""
        install.check_access(self.access)
        by_name = {e.name: e for e in self.installed()}
        unknown = [n for n in list(enabled) + list(update) if n not in by_name]
        if unknown:
            raise install.InstallError(f"no extension named {', '.join(map(repr, unknown))}")
        messages = [install.update(by_name[n]) for n in update]
        # an updated extension's install.py runs now: the restart does not go through launch.py
        stamps = install.InstallStamps.load(self.data_dir)
        for name in update:
            run = install.run_installer(by_name[name], sys.executable, stamps)
            if run.ran:
                messages.append(f"{name}: install.py " + ("ran." if run.ok else f"failed (exit {run.returncode})."))
        install.set_enabled(self.settings.options, enabled, disable_all)
        self.settings.save()
        self.restart_pending = True
        return messages

    def restart(self, delay_s: float = 0.5) -> bool:
        """Start this server process again (A1111's "Reload UI"): `os.execv` of the command
        it was started with, queued behind the jobs already waiting, after `delay_s` so the
        answer to the request that asked for it still goes out. False when the command is
        unknown (an embedded runtime): then the person restarts Kiln."""
        command = self.restart_command
        if not command:
            return False

        def execv():
            time.sleep(delay_s)
            for listener in self.before_restart:
                listener()
            log.info("restarting: %s", " ".join(command))
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(command[0], command)

        self.jobs.submit(execv, name="restart")
        return True
