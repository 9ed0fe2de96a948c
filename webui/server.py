"""One FastAPI app: the Gradio UI mounted on it (and the API routes, with --api)."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from modules import cmd_args, scripts  # noqa: E402
from modules.device import devices
from modules.runtime.runtime import REPO_ROOT, Runtime, RuntimeConfig  # noqa: E402

log = logging.getLogger("kiln")
EXTENSION_HOOKS_JS = Path(__file__).resolve().parent / "javascript" / "extension-hooks.js"


def make_runtime(args, restart_command: list[str] | None = None) -> Runtime:
    """The engine's runtime for these flags, handed to the A1111 edge (the extensions'
    scripts and callbacks load; they run every generation job)."""
    device = devices.choose(use_cpu="all" in args.use_cpu, precision="full" if args.precision == "full" else
                            ("bf16" if args.precision == "bf16" else "auto"), no_half=args.no_half,
                            xformers=args.xformers and not args.opt_sdp_attention, medvram=args.medvram,
                            lowvram=args.lowvram, compile=args.compile)
    data_dir = Path(args.data_dir or REPO_ROOT).resolve()
    runtime = Runtime(RuntimeConfig(
        data_dir=data_dir, device=device, ckpt=args.ckpt,
        ckpt_dirs=[Path(args.ckpt_dir)] if args.ckpt_dir else [],
        lora_dirs=[Path(args.lora_dir)] if getattr(args, "lora_dir", None) else [],
        embeddings_dirs=[Path(args.embeddings_dir)] if getattr(args, "embeddings_dir", None) else [],
        comfyui_dir=Path(args.comfyui_dir) if args.comfyui_dir else None,
        extra_model_paths=[Path(p) for p in args.extra_model_paths],
        extension_access=cmd_args.extension_access(args),
        disable_all_extensions=cmd_args.disable_all_extensions(args),
        restart_command=restart_command))
    scripts.attach(runtime)
    return runtime


def parse_auth(value: str | None) -> list[tuple[str, str]]:
    pairs = []
    for item in (value or "").split(","):
        if item.strip():
            user, _, password = item.strip().partition(":")
            pairs.append((user, password))
    return pairs


def create_app(runtime: Runtime, args):
    from fastapi import FastAPI

    app = FastAPI(title="Kiln", docs_url="/docs",
                  description="A1111-compatible API under /sdapi/v1 (with --api or --nowebui).")
    if args.api or args.nowebui:
        from webui import api
        # each face takes its own flag, or the other's when only one is given
        api.install(app, runtime, args, credentials=parse_auth(args.api_auth or args.gradio_auth))
    if args.nowebui:
        scripts.host_of(runtime).callbacks.app_started(None, app)  # extensions' on_app_started: their routes go on `app`
    else:
        import gradio as gr

        from webui.ui import app as ui_app
        from webui.ui import extensions as ui_extensions

        demo = ui_app.create(runtime)
        demo.queue(default_concurrency_limit=1)
        outputs = runtime.data_dir / runtime.options.outdir_samples
        outputs.mkdir(parents=True, exist_ok=True)
        auth = parse_auth(args.gradio_auth or args.api_auth) or None
        # the enabled extensions' javascript/*.js and style.css, as <script>/<link> tags served
        # through Gradio's file route (so the page's auth guards them too)
        head, files = ui_extensions.page_head(runtime.extensions.active, EXTENSION_HOOKS_JS)
        scripts.host_of(runtime).callbacks.app_started(demo, app)  # before the mount at "/", which would shadow their routes
        # mounted last: a mount at "/" shadows every route added after it
        app = gr.mount_gradio_app(app, demo, path="/", allowed_paths=[str(outputs), *files], auth=auth,
                                  footer_links=["api"], head=head)
    return app


def load_in_background(runtime: Runtime):
    """The page is served at once; the first model loads meanwhile, as the first task
    of the job queue (jobs queue behind it). Returns the Task."""
    def load():
        try:
            runtime.checkpoints.load()
        except Exception as e:  # the UI shows the message; the server keeps running
            runtime.checkpoints.last_load_error = str(e)
            log.error("could not load a checkpoint: %s", e)

    return runtime.jobs.submit(load, name="load checkpoint")


def main(argv=None):
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = cmd_args.parse(argv)
    # "Apply and restart UI" starts this same command again (sys.orig_argv: python -m webui.server ...)
    restart = [sys.executable, *sys.orig_argv[1:]] if argv is None else None
    runtime = make_runtime(args, restart)
    app = create_app(runtime, args)
    load_in_background(runtime)
    host = args.server_name or ("0.0.0.0" if args.listen else "127.0.0.1")
    port = args.port or (7861 if args.nowebui else 7860)
    print(f"Kiln: http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
