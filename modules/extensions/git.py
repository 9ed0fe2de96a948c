"""Git, for extensions: what version a folder is at, whether its upstream moved, clone and
fast-forward. Every call is a `git` subprocess with a timeout and no terminal prompts, so a
slow or missing network gives a message, never a hang."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

FETCH_TIMEOUT_S = 60
CLONE_TIMEOUT_S = 300
LOCAL_TIMEOUT_S = 10


class GitError(Exception):
    """A git command failed; the message is git's own last line (or why it could not run)."""


def _env() -> dict[str, str]:
    # never ask for a password on a terminal nobody watches; plain English messages
    return dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", LC_ALL="C")


def git(args: list[str], cwd: Path | None = None, timeout: float = LOCAL_TIMEOUT_S) -> str:
    """Run git, return stdout stripped; GitError with git's message when it fails."""
    cmd = ["git"] + (["-C", str(cwd)] if cwd is not None else []) + args
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(),
                             stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise GitError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} gave no answer in {timeout:.0f} s") from None
    if out.returncode != 0:
        lines = [ln.strip() for ln in (out.stderr or out.stdout).splitlines() if ln.strip()]
        raise GitError(lines[-1] if lines else f"git {args[0]} failed (exit {out.returncode})")
    return out.stdout.strip()


def is_checkout(path: Path) -> bool:
    return (Path(path) / ".git").exists()


@dataclass
class Version:
    """A1111's fields for an extension's version (all None when it is not a git checkout)."""
    remote: str | None = None
    branch: str | None = None
    commit_hash: str | None = None
    commit_date: int | None = None  # unix time of the commit

    @property
    def short(self) -> str | None:
        return self.commit_hash[:8] if self.commit_hash else None


def version(path: Path) -> Version:
    """The checkout's HEAD commit, date, branch and origin; empty for a plain folder or
    when git cannot read it."""
    if not is_checkout(path):
        return Version()
    try:
        commit, _, date = git(["log", "-1", "--format=%H %ct"], cwd=path).partition(" ")
    except GitError:
        return Version()
    try:
        branch = git(["rev-parse", "--abbrev-ref", "HEAD"], cwd=path)
    except GitError:
        branch = None
    try:
        remote = git(["config", "--get", "remote.origin.url"], cwd=path) or None
    except GitError:
        remote = None
    return Version(remote=remote, branch=None if branch == "HEAD" else branch, commit_hash=commit or None,
                   commit_date=int(date) if date.strip().isdigit() else None)


@dataclass
class UpdateCheck:
    name: str
    behind: int = 0  # commits upstream has that HEAD has not
    message: str = ""  # for the person: "up to date", "3 new commits", or why it could not tell

    @property
    def has_update(self) -> bool:
        return self.behind > 0


def check_for_update(name: str, path: Path, timeout: float = FETCH_TIMEOUT_S) -> UpdateCheck:
    """`git fetch`, then count the upstream commits HEAD lacks. Never raises: no network,
    no upstream or not a checkout each give a message."""
    if not is_checkout(path):
        return UpdateCheck(name, message="not a git checkout: cannot check for updates")
    try:
        upstream = git(["rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}"], cwd=path)
    except GitError:
        return UpdateCheck(name, message="no upstream branch to compare with")
    try:
        git(["fetch", "--quiet"], cwd=path, timeout=timeout)
    except GitError as e:
        return UpdateCheck(name, message=f"could not fetch {upstream}: {e}")
    try:
        behind = int(git(["rev-list", "--count", "HEAD..@{u}"], cwd=path))
    except (GitError, ValueError) as e:
        return UpdateCheck(name, message=f"could not compare with {upstream}: {e}")
    return UpdateCheck(name, behind, f"{behind} new commit{'s' * (behind != 1)} on {upstream}" if behind
                       else "up to date")


def fast_forward(path: Path) -> str:
    """Move HEAD to the fetched upstream (only forward: local changes are never lost).
    Returns the new short hash; GitError when it cannot."""
    git(["merge", "--ff-only", "@{u}"], cwd=path, timeout=FETCH_TIMEOUT_S)
    return git(["rev-parse", "--short=8", "HEAD"], cwd=path)


def clone(source: str, dest: Path, branch: str | None = None, timeout: float = CLONE_TIMEOUT_S) -> None:
    """A shallow clone of `source` (a URL, or a local repository's path) into `dest`."""
    if Path(source).is_dir():
        # a plain path makes git ignore --depth ("use file:// instead")
        source = Path(source).resolve().as_uri()
    args = ["clone", "--depth", "1"] + (["--branch", branch] if branch else []) + ["--", source, str(dest)]
    git(args, timeout=timeout)
