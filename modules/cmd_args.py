"""Command-line flags, with A1111's names and meanings. Plain argparse: launch.py reads
them with the system Python before any package is installed."""
from __future__ import annotations

import argparse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="launch.py", description="Kiln: a Stable Diffusion web UI")
    a = p.add_argument
    # set-up
    a("--test", action="store_true", help="set up, then run the test suite (arguments after -- go to pytest)")
    a("--exit", action="store_true", help="set up, then exit")
    a("--skip-install", action="store_true", help="skip installing requirements")
    a("--reinstall", action="store_true", help="install requirements even if unchanged")
    # server
    a("--port", type=int, default=None, help="port (default 7860; 7861 with --nowebui)")
    a("--listen", action="store_true", help="bind 0.0.0.0 (default: 127.0.0.1 only)")
    a("--server-name", default=None, help="bind this address")
    a("--api", action="store_true", help="serve the /sdapi/v1 API beside the UI")
    a("--nowebui", action="store_true", help="serve the API only")
    a("--gradio-auth", default=None, help="user:pass[,user2:pass2] for the UI")
    a("--api-auth", default=None, help="user:pass[,user2:pass2] for the API")
    a("--enable-insecure-extension-access", action="store_true",
      help="allow installing and changing extensions from the page even with --listen / --server-name")
    a("--disable-all-extensions", action="store_true", help="load no extension (the setting is kept)")
    a("--disable-extra-extensions", action="store_true", help="load only the extensions shipped with Kiln")
    # models and data
    a("--data-dir", default=None, help="where models/, outputs/ and config.json live (default: this folder)")
    a("--ckpt-dir", default=None, help="an extra folder of checkpoints")
    a("--ckpt", default=None, help="checkpoint to load first")
    a("--lora-dir", default=None, help="an extra folder of LoRAs")
    a("--embeddings-dir", default=None, help="an extra folder of textual inversion embeddings")
    a("--comfyui-dir", default=None, help="a ComfyUI install whose model folders to share")
    a("--extra-model-paths", action="append", default=[], help="ComfyUI extra_model_paths.yaml (repeatable)")
    # device
    a("--use-cpu", nargs="+", default=[], help="'all' to run everything on the CPU")
    a("--xformers", action="store_true", help="use xformers attention (installs it on CUDA machines)")
    a("--opt-sdp-attention", action="store_true", help="use PyTorch SDPA attention (the default)")
    a("--no-half", action="store_true", help="fp32 weights")
    a("--medvram", action="store_true", help="keep only the running part (text encoder, UNet, VAE) on the GPU")
    a("--lowvram", action="store_true", help="move the model to the GPU one block at a time (slow, least memory)")
    a("--compile", action="store_true", help="torch.compile the UNet and VAE decoder (CUDA; slow first image)")
    a("--precision", choices=["full", "half", "autocast", "bf16"], default="half")
    a("pytest_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def listens_beyond_localhost(args: argparse.Namespace) -> bool:
    return bool(args.listen) or (args.server_name is not None and args.server_name.strip().lower() not in LOCAL_HOSTS)


def extension_access(args: argparse.Namespace) -> bool:
    """May the page install and change extensions (that is, run code on this computer)?
    Not when others can reach it, unless asked for (A1111's rule)."""
    return bool(args.enable_insecure_extension_access) or not listens_beyond_localhost(args)


def disable_all_extensions(args: argparse.Namespace) -> str | None:
    return "all" if args.disable_all_extensions else "extra" if args.disable_extra_extensions else None


def parse(argv=None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    rest = args.pytest_args
    args.pytest_args = rest[1:] if rest[:1] == ["--"] else rest
    return args
