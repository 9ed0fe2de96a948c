#!/usr/bin/env python3
"""Kiln's set-up and start: `python3 launch.py` (web UI) or `python3 launch.py --test`.

Creates .venv if missing, installs the pinned requirements when they changed since the
last install (so a second start takes seconds), then starts the server or the tests
inside the venv. Runs with the system Python and the standard library alone.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".kiln-installed"
# k-diffusion is the sampler reference the tests compare with; its declared dependencies
# (torchvision among them) have no CPU build here, and the tests need only sampling.py.
TEST_NO_DEPS = ["k-diffusion==0.1.1.post1"]

sys.path.insert(0, str(ROOT))
from modules import cmd_args  # noqa: E402  (argparse only: no third-party imports)


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def wanted_state(test: bool, xformers: bool) -> str:
    files = ["requirements.txt"] + (["requirements-test.txt"] if test else [])
    digest = hashlib.sha256()
    for name in files:
        digest.update((ROOT / name).read_bytes())
    digest.update(repr((TEST_NO_DEPS if test else [], xformers, sys.version_info[:2])).encode())
    return digest.hexdigest()


def installed_states() -> set[str]:
    return set(STAMP.read_text().split()) if STAMP.exists() else set()


def cuda_available() -> bool:
    out = subprocess.run([str(PYTHON), "-c", "import torch; print(torch.cuda.is_available())"],
                         capture_output=True, text=True)
    return out.stdout.strip() == "True"


def install(test: bool, xformers: bool, force: bool) -> None:
    if not PYTHON.exists():
        run([sys.executable, "-m", "venv", str(VENV)])
    state = wanted_state(test, xformers)
    states = installed_states()
    if state in states and not force:
        return
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    # torch first and pinned alone: here it is the local CPU wheel, elsewhere the CUDA build
    run(pip + [next(line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("torch=="))])
    run(pip + ["-r", "requirements.txt"] + (["-r", "requirements-test.txt"] if test else []))
    if test:
        run(pip + ["--no-deps"] + TEST_NO_DEPS)
    if xformers:
        if cuda_available():
            run(pip + ["xformers"])
        else:
            print("--xformers: no CUDA GPU here, so xformers is not installed (PyTorch SDPA is used)", flush=True)
    done = {state, wanted_state(False, xformers)} if test else {state}  # test set-up covers the plain one
    STAMP.write_text("\n".join(sorted(states | done)) + "\n")


def run_extension_installers(args) -> None:
    """install.py of each enabled extension that is new or changed since its last run, in the
    venv's Python with the extension's folder as cwd. A failure is reported with the
    extension's name and start-up goes on."""
    from modules.extensions import install as extension_install, discovery as extensions
    from modules.runtime.options import Options

    data_dir = Path(args.data_dir or ROOT).resolve()
    options = Options.load(data_dir / "config.json")
    disable_all = cmd_args.disable_all_extensions(args) or options.disable_all_extensions
    found = extensions.active(extensions.installed(ROOT, data_dir, options.disabled_extensions), disable_all)
    extension_install.run_installers(found, str(PYTHON), data_dir, log=lambda line: print(line, flush=True),
                                     env=dict(os.environ, HF_HUB_OFFLINE="1"))


# ---- for extensions' install.py files (A1111's launch.run_pip / launch.is_installed) ----------
def is_installed(package: str) -> bool:
    from importlib import metadata

    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return False
    return True


def run_pip(command: str, desc: str | None = None, live: bool = True) -> None:
    """`run_pip("install foo==1.2", "foo")` from an install.py: pip in the Python running it."""
    import shlex

    if desc:
        print(f"Installing {desc}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", *shlex.split(command), "--prefer-binary",
                    "--disable-pip-version-check"], check=True, capture_output=not live)


def main(argv: list[str]) -> int:
    args = cmd_args.parse(argv)
    if not args.skip_install:
        install(args.test, args.xformers, args.reinstall)
        if not args.test:
            run_extension_installers(args)
    elif not PYTHON.exists():
        print("--skip-install: there is no .venv yet; run once without it", file=sys.stderr)
        return 2
    if args.exit:
        return 0
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    if args.test:
        cmd = [str(PYTHON), "-m", "pytest", "tests", *args.pytest_args]
    else:
        server_args = [a for a in argv if a not in ("--skip-install", "--reinstall")]
        cmd = [str(PYTHON), "-m", "webui.server", *server_args]
    os.chdir(ROOT)
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
