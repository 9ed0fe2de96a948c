"""/sdapi/v1: A1111's HTTP API over the Kiln runtime.

The routes build the same `GenerationRequest` the UI builds and submit it to the same
job queue (`Runtime.submit`), so the UI and the API share one FIFO, one progress state
and one set of results. A request handler awaits its task without holding a thread: a
client that goes away leaves its task running (and its images saved when it asked for
`save_images`), and waiting clients never starve the threads that answer /progress.
"""
from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI
from fastapi.concurrency import run_in_threadpool

from modules.extensions import git as extension_git
from modules.files import infotext, model_folders
from modules.generation.request import GenerationRequest, RequestError, ScriptSelection
from modules.models.errors import CheckpointError, CheckpointNotFound
from modules.runtime import option_rules
from modules.runtime.option_rules import OptionError
from modules.sampling import samplers
from modules.scripts import host_of
from modules.text import conditioning, styles
from modules.upscaling import upscalers
from webui.api import models
from webui.api.auth import basic_auth
from webui.api.codec import decode_image, encode_png
from webui.api import wire
from webui.api.errors import ApiError, install_handlers

log = logging.getLogger(__name__)

TEXT_SETTINGS = {f.name: f for f in dataclasses.fields(conditioning.TextSettings)}  # per-request overridable

PREFIX = "/sdapi/v1"
HASH_BUDGET_S = 10.0  # /sd-models hashes unhashed checkpoints this long, the rest in the background
LATENT_UPSCALE_MODES = ("Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                        "Latent (nearest)", "Latent (nearest-exact)")
# image.info keys png-info leaves out of "items" (as A1111)
_IGNORED_INFO = {"parameters", "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop",
                 "background", "timestamp", "duration", "progressive", "progression", "icc_profile",
                 "chromaticity", "photoshop", "transparency", "gamma", "srgb", "aspect"}


def _error_for(e: Exception, sampler_field: str = "sampler_name") -> ApiError:
    """An engine error as an API error."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, RequestError):
        return ApiError(422, e.field, e.message)
    if isinstance(e, OptionError):
        return ApiError(422, e.key, e.message)
    if isinstance(e, samplers.SamplerError):
        return ApiError(422, sampler_field, str(e))
    if isinstance(e, CheckpointError):
        if isinstance(e, CheckpointNotFound):
            return ApiError(404, "sd_model_checkpoint", str(e))
        # the file is the user's to replace: a 4xx that names it, the previous model stays loaded
        return ApiError(422, "sd_model_checkpoint", str(e), kind="CheckpointError")
    if isinstance(e, upscalers.UpscaleError):
        return ApiError({"unknown": 404, "too_large": 413}.get(e.kind, 422), e.field, e.message)
    log.error("API job failed", exc_info=e)
    return ApiError(500, None, f"{type(e).__name__}: {e}", kind=type(e).__name__)


class Api:
    def __init__(self, runtime, args=None):
        self.runtime = runtime
        self.args = args
        self._preview_cache: tuple[int, str] | None = None
        self._hashing: threading.Thread | None = None

    # ---- generation ------------------------------------------------------------------
    def _sampler(self, values: dict) -> tuple[str, str]:
        """(sampler, schedule type) from sampler_name / legacy sampler_index / scheduler;
        404 for an unknown sampler (as A1111), 422 for an unusable schedule type."""
        field = "sampler_name" if values.get("sampler_name") else "sampler_index"
        raw = values.get("sampler_name") or values.get("sampler_index") or "Euler"
        try:
            sampler, label = samplers.resolve(raw, values.get("scheduler") or "Automatic")
        except samplers.UnknownSampler as e:
            raise ApiError(404, field, str(e)) from None
        except samplers.SamplerError as e:
            raise ApiError(422, "scheduler", str(e)) from None
        return sampler.name, label

    def _checkpoint(self, name: Any, field: str) -> str:
        if not isinstance(name, str) or not name.strip():
            raise ApiError(422, field, "must be a checkpoint title or name")
        try:
            return self.runtime.checkpoints.resolve(name).name
        except CheckpointError as e:
            raise ApiError(404, field, str(e)) from None

    def build_request(self, req: models.Txt2ImgRequest, mode: str) -> tuple[GenerationRequest, bool]:
        """The API body -> (GenerationRequest, keep the checkpoint afterwards)."""
        for flag, what in (("enable_hr", "hires. fix"), ("tiling", "tiling"), ("restore_faces", "face restoration")):
            if getattr(req, flag):
                raise ApiError(422, flag, f"{what} is not supported by Kiln yet")
        if req.refiner_checkpoint not in (None, "", "None"):
            raise ApiError(422, "refiner_checkpoint", "the refiner is not supported by Kiln yet")

        values = req.model_dump()
        given = set(req.model_fields_set)
        if req.infotext:  # A1111 1.9: fields not sent come from the infotext
            for key, value in infotext.request_fields_from_infotext(req.infotext).items():
                if key in values and key not in req.model_fields_set:
                    values[key] = value
                    given.add(key)
        for key in ("width", "height"):
            # A1111 draws 512x512 when no size is sent, whatever the model; we draw the
            # model's native size (512 for SD 1.x, 1024 for SDXL, 64 for the demo model)
            # and, in img2img, the init image's size
            if key not in given:
                values[key] = None
        sampler_name, schedule = self._sampler(values)
        override = req.override_settings or {}
        checkpoint = None
        if override.get("sd_model_checkpoint") not in (None, ""):
            checkpoint = self._checkpoint(override["sd_model_checkpoint"], "override_settings.sd_model_checkpoint")
        clip_skip = override.get("CLIP_stop_at_last_layers", self.runtime.options.CLIP_stop_at_last_layers)
        if isinstance(clip_skip, bool) or not isinstance(clip_skip, int):
            raise ApiError(422, "override_settings.CLIP_stop_at_last_layers", f"must be a whole number, got {clip_skip!r}")
        # per-request conditioning settings (emphasis, SDXL crop and aesthetic scores)
        try:
            text_overrides = {key: option_rules.coerce(key, override[key], field.default, f"override_settings.{key}")
                              for key, field in TEXT_SETTINGS.items() if key in override}
        except OptionError as e:
            raise _error_for(e) from None
        for name in ("seed", "subseed"):
            if not -1 <= values[name] < 2**63:
                raise ApiError(422, name, f"must be -1 (random) or a number from 0 to 2^63-1, got {values[name]}")
        for name in ("cfg_scale", "subseed_strength"):
            if not math.isfinite(values[name]):
                raise ApiError(422, name, "must be a finite number")

        request = GenerationRequest(
            prompt=values["prompt"], negative_prompt=values["negative_prompt"], steps=values["steps"],
            sampler_name=sampler_name, scheduler=schedule, cfg_scale=values["cfg_scale"], width=values["width"],
            height=values["height"], seed=values["seed"], subseed=values["subseed"],
            subseed_strength=values["subseed_strength"], batch_size=values["batch_size"], n_iter=values["n_iter"],
            clip_skip=clip_skip, styles=list(values.get("styles") or []), checkpoint=checkpoint, mode=mode,
            save_images=bool(req.save_images and not req.do_not_save_samples), save_grid=not req.do_not_save_grid,
            override_settings=text_overrides,
            scripts=ScriptSelection(req.script_name or None, list(req.script_args or []),
                                    dict(req.alwayson_scripts or {})))
        if mode == "img2img":
            self._add_images(request, req)
        try:
            request.validate(self.runtime.settings.limits)
            self.runtime.job_runner.validate(request)  # unknown script names: 422, as A1111
        except RequestError as e:
            raise ApiError(422, e.field, e.message) from None
        if request.scripts.selected or request.scripts.alwayson:
            self._script_defaults()
        return request, bool(checkpoint) and not req.override_settings_restore_afterwards

    def _script_defaults(self) -> None:
        """Arguments a client leaves out take the scripts' ui() defaults (the page records
        them when it is built; without a page, build them once here)."""
        from webui.ui import scripts as scripts_ui
        scripts_ui.ensure_defaults(host_of(self.runtime).runner)

    def scripts_list(self) -> dict:
        """A1111's /scripts: every script's lower-case title, per tab."""
        runner = host_of(self.runtime).runner
        return {"txt2img": [s.name for s in runner.scripts[False]], "img2img": [s.name for s in runner.scripts[True]]}

    def script_info(self) -> list[dict]:
        from webui.ui import scripts as scripts_ui
        return scripts_ui.describe(host_of(self.runtime).runner)

    def _add_images(self, request: GenerationRequest, req: models.Img2ImgRequest) -> None:
        if not req.init_images:
            raise ApiError(422, "init_images", "img2img needs at least one init image")
        limit = self.runtime.settings.limits.max_pixels
        request.init_images = [decode_image(data, f"init_images[{i}]", limit) for i, data in enumerate(req.init_images)]
        request.mask = decode_image(req.mask, "mask", limit) if req.mask else None
        if not math.isfinite(req.denoising_strength):
            raise ApiError(422, "denoising_strength", "must be a finite number")
        request.denoising_strength = req.denoising_strength
        request.resize_mode = req.resize_mode
        request.mask_blur = req.mask_blur if req.mask_blur is not None else max(req.mask_blur_x, req.mask_blur_y)
        request.inpainting_fill = req.inpainting_fill
        request.inpaint_full_res = bool(req.inpaint_full_res)
        request.inpaint_full_res_padding = req.inpaint_full_res_padding
        request.inpainting_mask_invert = req.inpainting_mask_invert
        if not 0 <= request.inpaint_full_res_padding <= 1024:
            raise ApiError(422, "inpaint_full_res_padding", f"must be between 0 and 1024, got {req.inpaint_full_res_padding}")
        if req.inpainting_mask_invert not in (0, 1):
            raise ApiError(422, "inpainting_mask_invert", f"must be 0 or 1, got {req.inpainting_mask_invert}")

    async def generate(self, req: models.Txt2ImgRequest, mode: str) -> dict:
        request, keep = await run_in_threadpool(self.build_request, req, mode)
        try:
            task = self.runtime.submit(request, job=mode, task_id=req.force_task_id or None, keep_checkpoint=keep)
        except Exception as e:
            raise _error_for(e) from None
        try:
            # shield: a client that goes away does not cancel its task
            result = await asyncio.shield(asyncio.wrap_future(task.future))
        except Exception as e:
            raise _error_for(e) from None
        return await run_in_threadpool(self.respond, req, result, task)

    def respond(self, req: models.Txt2ImgRequest, result, task) -> dict:
        images = [encode_png(im, text) for im, text in zip(result.images, result.infotexts)] if req.send_images else []
        parameters = req.model_dump()
        if isinstance(req, models.Img2ImgRequest) and not req.include_init_images:
            parameters["init_images"] = None
            parameters["mask"] = None
        parameters.pop("include_init_images", None)
        return {"images": images, "parameters": parameters, "info": json.dumps(wire.generation_info(result, task))}

    # ---- progress, interrupt, skip -------------------------------------------------------
    def _preview_b64(self, progress) -> str | None:
        image = progress.preview
        if image is None:
            return None
        cached = self._preview_cache
        if cached and cached[0] == id(image):
            return cached[1]
        data = encode_png(image)
        self._preview_cache = (id(image), data)
        return data

    def progress(self, skip_current_image: bool = False) -> dict:
        p = self.runtime.progress
        state = p.state()
        state["queued"] = len(self.runtime.jobs.pending())
        if not p.active:
            return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
        return {"progress": p.fraction, "eta_relative": p.eta(), "state": state,
                "current_image": None if skip_current_image else self._preview_b64(p), "textinfo": p.textinfo}

    def internal_progress(self, req: models.InternalProgressRequest) -> dict:
        """A1111's /internal/progress, for one task id."""
        jobs, p = self.runtime.jobs, self.runtime.progress
        task = jobs.find(req.id_task) if req.id_task else None
        position = jobs.position(req.id_task) if req.id_task else None
        active = p.active and p.task_id == req.id_task
        queued = position is not None and position > 0
        completed = task is not None and task.finished is not None
        out = {"active": active, "queued": queued, "completed": completed, "progress": None, "eta": None,
               "live_preview": None, "id_live_preview": req.id_live_preview, "textinfo": None,
               "queue_position": position}
        if queued:
            out["textinfo"] = f"In queue: {position - 1} ahead"
        elif active:
            out.update(progress=p.fraction, eta=p.eta(), textinfo=p.textinfo, id_live_preview=p.preview_step)
            if req.live_preview and p.preview is not None and p.preview_step != req.id_live_preview:
                out["live_preview"] = "data:image/png;base64," + self._preview_b64(p)
        elif task is None:
            out["textinfo"] = "Unknown task"
        return out

    def pending_tasks(self) -> dict:
        now = time.time()
        tasks = [{"id": t.id, "name": t.name, "position": i, "queued_for": round(now - t.created, 3)}
                 for i, t in enumerate(self.runtime.jobs.pending(), start=1)]
        current = self.runtime.jobs.current
        return {"size": len(tasks), "tasks": tasks, "running": current.describe() if current else None}

    def interrupt(self) -> dict:
        self.runtime.interrupt()
        return {}

    def skip(self) -> dict:
        self.runtime.skip()
        return {}

    # ---- options and flags ---------------------------------------------------------------
    def get_options(self) -> dict:
        rt = self.runtime
        o = rt.options
        data: dict[str, Any] = {"sd_vae": "Automatic", "samples_format": "png",
                                "sd_checkpoint_hash": None}
        data.update({k: v for k, v in dataclasses.asdict(o).items() if k != "extra"})
        data.update(o.extra)
        outdir = rt.data_dir / o.outdir_samples
        data.update({"outdir_txt2img_samples": str(outdir / "txt2img-images"),
                     "outdir_img2img_samples": str(outdir / "img2img-images"),
                     "outdir_txt2img_grids": str(outdir / "txt2img-grids"),
                     "outdir_img2img_grids": str(outdir / "img2img-grids"),
                     "samples_save": o.samples_save, "grid_save": o.grid_save})
        model = rt.model
        if model is not None:
            data["sd_model_checkpoint"] = model.title
            data["sd_checkpoint_hash"] = rt.checkpoints.hashes.cached_sha256(model.path)
        else:
            try:
                mf = rt.checkpoints.default()
            except CheckpointError:
                mf = None
            data["sd_model_checkpoint"] = rt.checkpoints.title(mf) if mf else (o.sd_model_checkpoint or None)
        return data

    def set_options(self, body: dict[str, Any]) -> None:
        """Checked, applied and saved by the runtime, as the Settings tab does (422 for a bad
        value or a read-only one, 404 for a checkpoint that is not there)."""
        try:
            self.runtime.settings.set(body)
        except Exception as e:
            raise _error_for(e) from None
        return None

    def cmd_flags(self) -> dict:
        flags = dict(vars(self.args)) if self.args is not None else {}
        flags.pop("pytest_args", None)
        for key in ("api_auth", "gradio_auth"):
            if flags.get(key):
                flags[key] = ",".join(f"{item.partition(':')[0]}:***" for item in str(flags[key]).split(",") if item)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in flags.items()}

    # ---- lists -------------------------------------------------------------------------------
    def sd_models(self) -> list[dict]:
        rt = self.runtime
        files = rt.checkpoints.list()
        deadline = time.time() + HASH_BUDGET_S
        items, unhashed = [], []
        for mf in files:
            sha = rt.checkpoints.hashes.cached_sha256(mf.path)
            if sha is None and time.time() < deadline:
                try:
                    sha = rt.checkpoints.hashes.sha256(mf.path)
                except OSError:
                    sha = None
            if sha is None:
                unhashed.append(mf.path)
            config = mf.path.with_suffix(".yaml")
            items.append({"title": model_folders.checkpoint_title(mf, sha[:10] if sha else None),
                          "model_name": os.path.splitext(mf.name.replace("/", "_"))[0],
                          "hash": sha[:10] if sha else None, "sha256": sha, "filename": str(mf.path),
                          "config": str(config) if config.exists() else None})
        if unhashed:
            self._hash_later(unhashed)
        return items

    def _hash_later(self, files: list[Path]) -> None:
        if self._hashing is not None and self._hashing.is_alive():
            return

        def work():
            for path in files:
                try:
                    self.runtime.checkpoints.hashes.sha256(path)
                except OSError:
                    pass

        self._hashing = threading.Thread(target=work, name="hash-checkpoints", daemon=True)
        self._hashing.start()

    def sd_vae(self) -> list[dict]:
        return [{"model_name": mf.name, "filename": str(mf.path)}
                for mf in model_folders.list_models(self.runtime.folders, "vae")]

    def loras(self) -> list[dict]:
        networks = self.runtime.networks
        return [{"name": mf.stem, "alias": networks.alias(mf), "path": str(mf.path), "metadata": networks.metadata(mf)}
                for mf in networks.loras()]

    def embeddings(self) -> dict:
        """A1111's shape: every embedding file, under "loaded" when the loaded model can
        use it and under "skipped" (with the reason in "message") when not."""
        from modules.models import embeddings

        networks, model = self.runtime.networks, self.runtime.model
        widths = embeddings.encoder_widths(model) if model is not None else None
        scan = networks.embedding_library.scan(networks.embedding_files(), widths)
        skipped = {}
        for name, (emb, why) in scan.skipped.items():
            item = emb.describe() if emb else {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                               "shape": 0, "vectors": 0}
            skipped[name] = item | {"message": why}
        return {"loaded": {name: emb.describe() for name, emb in scan.loaded.items()}, "skipped": skipped}

    def prompt_styles(self) -> list[dict]:
        try:
            found = styles.load(self.runtime.data_dir)
        except (RequestError, csv.Error) as e:
            raise ApiError(500, None, str(e)) from None
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in found if s.name]

    def memory(self) -> dict:
        ram: dict[str, Any]
        try:
            info = {}
            with open("/proc/meminfo") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    info[key] = int(value.split()[0]) * 1024
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            total = info["MemTotal"]
            ram = {"free": info.get("MemAvailable", info.get("MemFree", 0)), "used": rss, "total": total}
        except Exception as e:
            ram = {"error": str(e)}
        try:
            import torch
            if torch.cuda.is_available():
                free, total = torch.cuda.mem_get_info()
                stats = torch.cuda.memory_stats()
                cuda = {"system": {"free": free, "used": total - free, "total": total},
                        "active": {"current": stats.get("active_bytes.all.current", 0),
                                   "peak": stats.get("active_bytes.all.peak", 0)},
                        "allocated": {"current": stats.get("allocated_bytes.all.current", 0),
                                      "peak": stats.get("allocated_bytes.all.peak", 0)},
                        "reserved": {"current": stats.get("reserved_bytes.all.current", 0),
                                     "peak": stats.get("reserved_bytes.all.peak", 0)},
                        "inactive": {"current": stats.get("inactive_split_bytes.all.current", 0),
                                     "peak": stats.get("inactive_split_bytes.all.peak", 0)},
                        "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)}}
            else:
                cuda = {"error": "unavailable"}
        except Exception as e:
            cuda = {"error": str(e)}
        return {"ram": ram, "cuda": cuda}

    def extensions(self) -> list[dict]:
        """Every installed extension with A1111's fields; `enabled` is the saved choice
        (what loads after the next restart). Version fields are None for a plain folder."""
        out = []
        for ext in self.runtime.extensions.installed():
            v = extension_git.version(ext.path)
            out.append({"name": ext.name, "remote": v.remote, "branch": v.branch, "commit_hash": v.commit_hash,
                        "version": v.short, "commit_date": v.commit_date, "enabled": ext.enabled})
        return out

    # ---- models --------------------------------------------------------------------------
    def unload_checkpoint(self) -> dict:
        self.runtime.checkpoints.unload()
        return {}

    def reload_checkpoint(self) -> dict:
        try:
            self.runtime.checkpoints.reload()
        except Exception as e:
            raise _error_for(e) from None
        return {}

    # ---- extras and png info -------------------------------------------------------------
    def _upscale(self, image, req: models.ExtrasBaseRequest):
        if req.gfpgan_visibility > 0 or req.codeformer_visibility > 0:
            field = "gfpgan_visibility" if req.gfpgan_visibility > 0 else "codeformer_visibility"
            raise ApiError(422, field, "face restoration is not available in Kiln")
        settings = upscalers.UpscaleSettings(
            resize_mode=req.resize_mode, upscaling_resize=req.upscaling_resize,
            upscaling_resize_w=req.upscaling_resize_w, upscaling_resize_h=req.upscaling_resize_h,
            upscaling_crop=req.upscaling_crop, upscaler_1=req.upscaler_1, upscaler_2=req.upscaler_2,
            extras_upscaler_2_visibility=req.extras_upscaler_2_visibility)
        try:
            out, items = upscalers.upscale(image, settings, max_pixels=4 * self.runtime.settings.limits.max_pixels)
        except upscalers.UpscaleError as e:
            raise _error_for(e) from None
        text = ", ".join(f"{k}: {infotext.format_value(v)}" for k, v in items.items())
        encoded = encode_png(out, infotext.read_infotext(image), {"postprocessing": text} if text else None)
        return encoded, text

    def extra_single_image(self, req: models.ExtrasSingleImageRequest) -> dict:
        image = decode_image(req.image, "image", self.runtime.settings.limits.max_pixels)
        encoded, text = self._upscale(image, req)
        return {"html_info": text, "image": encoded if req.show_extras_results else None}

    def extra_batch_images(self, req: models.ExtrasBatchImagesRequest) -> dict:
        limit = self.runtime.settings.limits.max_pixels
        images = [decode_image(item.data, f"imageList[{i}].data", limit) for i, item in enumerate(req.imageList)]
        results = [self._upscale(image, req) for image in images]
        return {"html_info": results[0][1] if results else "",
                "images": [r[0] for r in results] if req.show_extras_results else []}

    def png_info(self, req: models.PNGInfoRequest) -> dict:
        image = decode_image(req.image, "image", self.runtime.settings.limits.max_pixels)
        text = infotext.read_infotext(image) or ""
        items = {k: v for k, v in image.info.items()
                 if isinstance(k, str) and k not in _IGNORED_INFO and isinstance(v, (str, int, float, bool))}
        parameters = infotext.parse_infotext(text) if text else {}
        if parameters:  # A1111's "apply if any": saved styles found in the prompts are listed and taken out
            try:
                known = styles.load(self.runtime.data_dir)
            except RequestError:
                known = []
            names, prompt, negative = styles.extract(parameters["Prompt"], parameters["Negative prompt"], known)
            if names:
                parameters.update({"Prompt": prompt, "Negative prompt": negative, "Styles array": names})
        return {"info": text, "items": items, "parameters": parameters}


def install(app: FastAPI, runtime, args=None, credentials: list[tuple[str, str]] | None = None) -> Api:
    """Add the /sdapi/v1 routes (and A1111's /internal/ queue routes) to `app`, guarded
    by HTTP Basic auth when `credentials` are given. Call before mounting the Gradio app
    at "/", which would otherwise shadow them."""
    install_handlers(app)
    api = Api(runtime, args)
    router = APIRouter(dependencies=[Depends(basic_auth(credentials))] if credentials else [])
    p = PREFIX
    errors = {code: {"model": models.ErrorResponse} for code in (400, 401, 404, 413, 422, 500)}

    @router.post(f"{p}/txt2img", response_model=models.TextToImageResponse, responses=errors, tags=["generation"])
    async def txt2img(req: models.Txt2ImgRequest):
        return await api.generate(req, "txt2img")

    @router.post(f"{p}/img2img", response_model=models.ImageToImageResponse, responses=errors, tags=["generation"])
    async def img2img(req: models.Img2ImgRequest):
        return await api.generate(req, "img2img")

    router.add_api_route(f"{p}/extra-single-image", api.extra_single_image, methods=["POST"], responses=errors,
                         response_model=models.ExtrasSingleImageResponse, tags=["extras"])
    router.add_api_route(f"{p}/extra-batch-images", api.extra_batch_images, methods=["POST"], responses=errors,
                         response_model=models.ExtrasBatchImagesResponse, tags=["extras"])
    router.add_api_route(f"{p}/png-info", api.png_info, methods=["POST"], responses=errors,
                         response_model=models.PNGInfoResponse, tags=["extras"])
    router.add_api_route(f"{p}/progress", api.progress, methods=["GET"], response_model=models.ProgressResponse,
                         tags=["queue"])
    router.add_api_route(f"{p}/interrupt", api.interrupt, methods=["POST"], tags=["queue"])
    router.add_api_route(f"{p}/skip", api.skip, methods=["POST"], tags=["queue"])
    router.add_api_route("/internal/progress", api.internal_progress, methods=["POST"], tags=["queue"])
    router.add_api_route("/internal/pending-tasks", api.pending_tasks, methods=["GET"], tags=["queue"])

    router.add_api_route(f"{p}/options", api.get_options, methods=["GET"], tags=["options"])

    @router.post(f"{p}/options", responses=errors, tags=["options"])
    def set_options(body: dict[str, Any] = Body(...)):
        return api.set_options(body)

    router.add_api_route(f"{p}/cmd-flags", api.cmd_flags, methods=["GET"], tags=["options"])
    router.add_api_route(f"{p}/samplers", wire.sampler_list, methods=["GET"],
                         response_model=list[models.SamplerItem], tags=["lists"])
    router.add_api_route(f"{p}/schedulers", wire.scheduler_list, methods=["GET"],
                         response_model=list[models.SchedulerItem], tags=["lists"])
    router.add_api_route(f"{p}/upscalers", lambda: [{"name": n, "model_name": None, "model_path": None,
                                                     "model_url": None, "scale": 4}
                                                    for n in upscalers.upscaler_names()],
                         methods=["GET"], response_model=list[models.UpscalerItem], tags=["lists"])
    router.add_api_route(f"{p}/latent-upscale-modes", lambda: [{"name": n} for n in LATENT_UPSCALE_MODES],
                         methods=["GET"], response_model=list[models.LatentUpscalerModeItem], tags=["lists"])
    router.add_api_route(f"{p}/sd-models", api.sd_models, methods=["GET"], response_model=list[models.SDModelItem],
                         tags=["lists"])
    router.add_api_route(f"{p}/sd-vae", api.sd_vae, methods=["GET"], response_model=list[models.SDVaeItem],
                         tags=["lists"])
    router.add_api_route(f"{p}/loras", api.loras, methods=["GET"], response_model=list[models.LoraItem],
                         tags=["lists"])
    router.add_api_route(f"{p}/embeddings", api.embeddings, methods=["GET"],
                         response_model=models.EmbeddingsResponse, tags=["lists"])
    router.add_api_route(f"{p}/prompt-styles", api.prompt_styles, methods=["GET"],
                         response_model=list[models.PromptStyleItem], tags=["lists"])
    for name in ("refresh-checkpoints", "refresh-vae", "refresh-loras", "refresh-embeddings"):
        # folders are listed afresh on every request: nothing to refresh
        router.add_api_route(f"{p}/{name}", lambda: None, methods=["POST"], tags=["lists"], name=name)
    router.add_api_route(f"{p}/memory", api.memory, methods=["GET"], response_model=models.MemoryResponse,
                         tags=["system"])
    router.add_api_route(f"{p}/scripts", api.scripts_list, methods=["GET"],
                         response_model=models.ScriptsList, tags=["scripts"])
    router.add_api_route(f"{p}/script-info", api.script_info, methods=["GET"],
                         response_model=list[models.ScriptInfo], tags=["scripts"])
    router.add_api_route(f"{p}/extensions", api.extensions, methods=["GET"],
                         response_model=list[models.ExtensionItem], tags=["scripts"])
    router.add_api_route(f"{p}/unload-checkpoint", api.unload_checkpoint, methods=["POST"], tags=["models"])
    router.add_api_route(f"{p}/reload-checkpoint", api.reload_checkpoint, methods=["POST"], responses=errors,
                         tags=["models"])
    app.include_router(router)
    return api
