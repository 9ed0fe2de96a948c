"""Speed benchmark: Kiln's txt2img against plain diffusers on the same modules.

    python3 -m benchmarks.speed                 # GPU: SD1.5 and SDXL, full size, random weights
    python3 -m benchmarks.speed --cpu-small     # CPU (automatic without CUDA): demo + tiny SD1
    python3 -m benchmarks.speed --switching     # RSS over 10 checkpoint switches
    python3 -m benchmarks.speed --threads-sweep # CPU: 1 thread against all, by job size

Nothing is downloaded: the checkpoints are built from the published architectures with
random weights (modules/models/synthetic.py, so the FLOPs are the real ones), written in
the single-file layout into a cache folder and loaded through Kiln's loader. The diffusers
pipeline is built from the very modules Kiln loaded (no hub access), with diffusers' own
Euler a scheduler, so both sides run the same weights at the same settings.

Each row is one setting (attention, dtype, channels_last, compiled) and one engine:
UNet it/s with CFG at batch 1 and 4 (timed between the first and last step callbacks, so
text encoding and VAE decoding are not in it), seconds per image end to end, model load
time (Kiln's loader) and peak GPU memory. Numbers are the median of several runs after a
warm-up run, timed with CUDA events on the GPU and perf_counter on the CPU. This is not a
test: it prints numbers. tests/test_benchmark.py runs it with tiny settings to keep it
working.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from modules.device import devices, memory
from modules.generation import pipeline
from modules.generation.hooks import JobControl
from modules.models.loader import LoadedModel, load_checkpoint
from tests.synthetic import write_checkpoint
from modules.generation.request import GenerationRequest

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "Stable-diffusion" / "kiln-demo-shapes.safetensors"
# image size per model: the demo's native 64x64; the tiny test model at 64x64 as well (its
# file says SD1, so its "native" 512 would be a 256x256 latent for a toy UNet)
DEFAULT_SIZE = {"tiny-sd1": (64, 64), "tiny-sd1-b": (64, 64), "sd15": (512, 512), "sdxl": (1024, 1024)}
PROMPT = "a large red circle in the centre on a blue background"
NEGATIVE = "blurry"


@dataclass(frozen=True)
class Setting:
    name: str
    dtype: torch.dtype = torch.float32
    attention: str = "sdpa"
    channels_last: bool = False
    compile: bool = False


@dataclass
class Row:
    model: str
    setting: str
    engine: str  # "kiln" or "diffusers"
    its_b1: float | None = None
    its_b4: float | None = None
    sec_per_image: float | None = None
    load_s: float | None = None
    peak_gb: float | None = None
    notes: list[str] = field(default_factory=list)


# ---- timing ------------------------------------------------------------------------

class Clock:
    """Timestamps that do not stall the GPU: CUDA events recorded in the stream (read
    after one synchronize at the end), perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def mark(self) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self, a: int = 0, b: int = -1) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return self.marks[a].elapsed_time(self.marks[b]) / 1000
        return self.marks[b] - self.marks[a]


# ---- models ------------------------------------------------------------------------

def checkpoint_for(name: str, cache: Path) -> Path:
    """The demo model from the repo, or a random-weight one written once into `cache`."""
    if name == "demo":
        return DEMO
    if name == "demo-b":  # a second file of the demo's architecture, for switching
        path = cache / "kiln-bench-demo-b.safetensors"
        if not path.exists():
            shutil.copyfile(DEMO, path)
        return path
    family, size = {"tiny-sd1": ("sd1", "tiny"), "tiny-sd1-b": ("sd1", "tiny"), "sd15": ("sd1", "full"),
                    "sd15-b": ("sd1", "full"),
                    "sdxl": ("sdxl", "full")}[name]
    path = cache / f"kiln-bench-{name}.safetensors"
    if not path.exists():
        log.info("writing %s (random weights) ...", path)
        write_checkpoint(path.with_suffix(".tmp"), family, size, seed=2 if name.endswith("-b") else 1)
        path.with_suffix(".tmp").replace(path)
    return path


def load(path: Path, setting: Setting, device: torch.device, cache: Path) -> tuple[LoadedModel, float]:
    started = time.perf_counter()
    model = load_checkpoint(path, name=path.name, short_hash="bench", device=device, dtype=setting.dtype,
                            cache_dir=cache)
    devices.apply_attention(model, setting.attention)
    devices.optimize(model, channels_last=setting.channels_last, compile=setting.compile)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return model, time.perf_counter() - started


def diffusers_pipeline(model: LoadedModel):
    """A plain diffusers pipeline over Kiln's loaded modules, with diffusers' Euler a."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    scheduler = EulerAncestralDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                                beta_schedule="scaled_linear", timestep_spacing="leading",
                                                steps_offset=1, prediction_type=model.info.prediction_type)
    if model.family.added_conditioning:  # SDXL: two text encoders, pooled text + time ids
        pipe = StableDiffusionXLPipeline(vae=model.vae, text_encoder=model.text_encoders[0],
                                         text_encoder_2=model.text_encoders[1], tokenizer=model.tokenizers[0],
                                         tokenizer_2=model.tokenizers[1], unet=model.unet, scheduler=scheduler)
    else:
        pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoders[0], tokenizer=model.tokenizers[0],
                                       unet=model.unet, scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---- one measurement per engine ----------------------------------------------------

def kiln_run(model: LoadedModel, size: tuple[int, int], steps: int, batch: int, outdir: Path, per_step: bool,
             auto_threads: bool = True):
    """Kiln's txt2img (pipeline.generate, images not saved). Returns (step it/s, seconds)."""
    clock = Clock(model.device)
    control = JobControl(on_step=(lambda *_: clock.mark()) if per_step else None)
    request = GenerationRequest(prompt=PROMPT, negative_prompt=NEGATIVE, steps=steps, sampler_name="Euler a",
                                cfg_scale=7.0, width=size[0], height=size[1], seed=1, batch_size=batch,
                                save_images=False)
    clock.mark()
    pipeline.generate(model, request, outdir=outdir, control=control, save_grid=False, auto_threads=auto_threads)
    clock.mark()
    total = clock.seconds(0, -1)
    its = (steps - 1) / clock.seconds(1, -2) if per_step and steps > 1 else None
    return its, total


def diffusers_run(pipe, model: LoadedModel, size: tuple[int, int], steps: int, batch: int, per_step: bool):
    clock = Clock(model.device)

    def on_step(_pipe, _i, _t, kwargs):
        clock.mark()
        return kwargs

    clock.mark()
    pipe(prompt=[PROMPT] * batch, negative_prompt=[NEGATIVE] * batch, num_inference_steps=steps, guidance_scale=7.0,
         width=size[0], height=size[1], generator=torch.Generator("cpu").manual_seed(1),
         callback_on_step_end=on_step if per_step else None)
    clock.mark()
    total = clock.seconds(0, -1)
    its = (steps - 1) / clock.seconds(1, -2) if per_step and steps > 1 else None
    return its, total


def measure(model_name: str, path: Path, setting: Setting, device: torch.device, *, size: tuple[int, int] | None,
            steps: int, runs: int, warmup: int, cache: Path) -> list[Row]:
    """Kiln and diffusers on one loaded model. The two engines take turns run by run, so
    a machine whose load changes during the benchmark slows both alike."""
    model, load_s = load(path, setting, device, cache)
    size = size or DEFAULT_SIZE.get(model_name) or model.info.native_size
    pipe = diffusers_pipeline(model)
    rows = {"kiln": Row(model_name, setting.name, "kiln", load_s=load_s), "diffusers": Row(model_name, setting.name, "diffusers")}
    peak = {"kiln": 0.0, "diffusers": 0.0}
    with tempfile.TemporaryDirectory() as outdir:
        def run(engine: str, batch: int, per_step: bool):
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            if engine == "kiln":
                out = kiln_run(model, size, steps, batch, Path(outdir), per_step)
            else:
                out = diffusers_run(pipe, model, size, steps, batch, per_step)
            if device.type == "cuda":
                peak[engine] = max(peak[engine], torch.cuda.max_memory_allocated() / 2 ** 30)
            return out

        def both(batch: int, per_step: bool, pick: int) -> dict[str, float]:
            for _ in range(warmup):
                for engine in rows:
                    run(engine, batch, per_step)
            samples = {engine: [] for engine in rows}
            for _ in range(max(1, runs)):
                for engine in rows:
                    samples[engine].append(run(engine, batch, per_step)[pick] or 0.0)
            return {engine: statistics.median(v) or None for engine, v in samples.items()}

        for batch in (1, 4):
            for engine, its in both(batch, True, 0).items():
                setattr(rows[engine], f"its_b{batch}", its)
        for engine, sec in both(1, False, 1).items():
            rows[engine].sec_per_image = sec
    for engine, row in rows.items():
        row.peak_gb = peak[engine] if device.type == "cuda" else None
    del pipe, model
    memory.empty_cache(device)
    return list(rows.values())


# ---- settings and report -------------------------------------------------------------

def gpu_settings() -> list[Setting]:
    half = [Setting("fp16 sdpa", torch.float16), Setting("bf16 sdpa", torch.bfloat16)]
    try:
        import xformers.ops  # noqa: F401
        half.append(Setting("fp16 xformers", torch.float16, attention="xformers"))
    except ImportError:
        pass
    half += [Setting("fp16 sdpa channels_last", torch.float16, channels_last=True),
             Setting("fp16 sdpa compiled", torch.float16, compile=True)]
    return half


def cpu_settings() -> list[Setting]:
    return [Setting("fp32 sdpa"), Setting("fp32 sdpa channels_last", channels_last=True)]


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[Row], device_name: str) -> str:
    head = ["model", "setting", "engine", "UNet it/s b1", "UNet it/s b4", "s/image", "load s", "peak GB"]
    body = [[r.model, r.setting, r.engine, _fmt(r.its_b1, ".2f"), _fmt(r.its_b4, ".2f"), _fmt(r.sec_per_image, ".3f"),
             _fmt(r.load_s, ".2f"), _fmt(r.peak_gb, ".2f")] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [f"device: {device_name}", line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(b) for b in body]
    kiln = {(r.model, r.setting): r for r in rows if r.engine == "kiln"}
    for r in rows:
        k = kiln.get((r.model, r.setting))
        if r.engine == "diffusers" and k and k.sec_per_image and r.sec_per_image:
            out.append(f"{r.model} / {r.setting}: Kiln s/image = {k.sec_per_image / r.sec_per_image:.2f} x diffusers")
    return "\n".join(out)


def threads_sweep(cache: Path, models: list[str], sizes: list[int] | None, batches=(1, 2, 4), steps: int = 20,
                  runs: int = 3) -> str:
    """Seconds per image on 1 thread and on all of them, by job size (UNet parameters x
    images per UNet call x latent positions), with the automatic choice off: where one
    thread starts to lose sets devices.SMALL_CPU_JOB."""
    threads = torch.get_num_threads()
    lines = [f"| model | size | batch | work | 1 thread s/image | {threads} threads s/image | auto picks |",
             "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as outdir:
        for name in models:
            model, _ = load(checkpoint_for(name, cache), Setting("fp32 sdpa"), torch.device("cpu"), cache)
            native = (DEFAULT_SIZE.get(name) or model.info.native_size)[0]
            for side in sizes or [native, native * 2]:
                for batch in batches:
                    positions = (side // model.vae_scale_factor) ** 2
                    work = devices.unet_work(model, 2 * batch, positions)
                    seconds = {}
                    for n in (1, threads):
                        torch.set_num_threads(n)
                        kiln_run(model, (side, side), steps, batch, Path(outdir), False, auto_threads=False)
                        seconds[n] = statistics.median(
                            kiln_run(model, (side, side), steps, batch, Path(outdir), False, auto_threads=False)[1]
                            for _ in range(runs)) / batch
                    torch.set_num_threads(threads)
                    auto = 1 if devices.small_cpu_job(model, 2 * batch, positions) else threads
                    lines.append(f"| {name} | {side} | {batch} | {work:.2e} | {seconds[1]:.3f} | "
                                 f"{seconds[threads]:.3f} | {auto} |")
                    print(lines[-1], flush=True)  # row by row: the big sizes take minutes
            del model
    return "\n".join(lines)


def rss_mb() -> float:
    """Resident set size of this process (psutil when installed, else /proc)."""
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2 ** 20
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def switching(cache: Path, device: torch.device, dtype: torch.dtype, n: int = 10, names=("tiny-sd1", "tiny-sd1-b"),
              ckpt_cache: int = 0) -> list[float]:
    """RSS (MiB) after each of `n` switches between two checkpoints, through the Runtime."""
    from modules.runtime.runtime import Runtime, RuntimeConfig

    paths = [checkpoint_for(name, cache) for name in names]
    if paths[0].parent != paths[1].parent:  # the demo lives in the repo: list both from one folder
        paths = [p if p.parent == cache else Path(shutil.copyfile(p, cache / p.name)) for p in paths]
    with tempfile.TemporaryDirectory() as data:
        runtime = Runtime(RuntimeConfig(data_dir=Path(data), device=devices.DeviceConfig(device, dtype, "sdpa"),
                                        ckpt_dirs=[paths[0].parent]))
        runtime.options.sd_checkpoint_cache = ckpt_cache
        out = []
        for i in range(n):
            runtime.checkpoints.load(paths[i % 2].name)
            gc.collect()
            out.append(rss_mb())
        return out


def startup(port: int = 0, timeout: float = 600.0) -> dict[str, float]:
    """Seconds from `python3 launch.py --skip-install` to the page answering and to the
    first image (demo model, 20 steps, through the API), in a fresh process."""
    import json
    import socket
    import subprocess
    import sys
    import urllib.request

    if not port:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "launch.py", "--skip-install", "--api", "--port", str(port),
                                 "--data-dir", data], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        out = {}
        try:
            while "page_s" not in out:
                if proc.poll() is not None or time.perf_counter() - started > timeout:
                    raise RuntimeError("the server did not start")
                try:
                    urllib.request.urlopen(url + "/", timeout=5)
                    out["page_s"] = time.perf_counter() - started
                except OSError:
                    time.sleep(0.1)
            body = json.dumps({"prompt": PROMPT, "steps": 20, "sampler_name": "Euler a", "seed": 1,
                               "width": 64, "height": 64}).encode()
            req = urllib.request.Request(url + "/sdapi/v1/txt2img", data=body, headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=timeout).read()
            out["first_image_s"] = time.perf_counter() - started
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return out


def main(argv: list[str] | None = None) -> tuple[list[Row], str]:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.speed", description=__doc__.split("\n")[0])
    p.add_argument("--cpu-small", action="store_true", help="CPU, small models (automatic without CUDA)")
    p.add_argument("--models", nargs="+", default=None, help="demo, tiny-sd1, sd15, sdxl")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--runs", type=int, default=5, help="timed runs per number (the median is shown)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--size", type=int, default=None, help="image side (default: each model's native size)")
    p.add_argument("--cache", default=None, help="where the random-weight checkpoints are kept")
    p.add_argument("--settings", nargs="+", default=None, help="only the settings whose name contains one of these")
    p.add_argument("--switching", action="store_true", help="also measure RSS over 10 checkpoint switches")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--startup", action="store_true", help="only: seconds from launch.py to the page and first image")
    p.add_argument("--checkpoint-cache", type=int, default=0, help="sd_checkpoint_cache for --switching")
    p.add_argument("--threads-sweep", action="store_true",
                   help="only: CPU seconds per image on 1 thread and on all, by job size (models: demo, tiny-sd1)")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.startup:
        times = startup()
        report = (f"launch.py --skip-install: page served after {times['page_s']:.1f} s, "
                  f"first image (demo model, 20 steps) after {times['first_image_s']:.1f} s")
        print(report)
        return [], report
    cuda = torch.cuda.is_available() and not args.cpu_small
    device = torch.device("cuda" if cuda else "cpu")
    cache = Path(args.cache or Path(tempfile.gettempdir()) / "kiln-bench")
    cache.mkdir(parents=True, exist_ok=True)
    if args.threads_sweep:
        report = threads_sweep(cache, args.models or ["demo", "tiny-sd1"], [args.size] if args.size else None,
                               steps=args.steps, runs=args.runs)
        return [], report
    models = args.models or (["sd15", "sdxl"] if cuda else ["demo", "tiny-sd1"])
    settings = gpu_settings() if cuda else cpu_settings()
    if args.settings:
        settings = [s for s in settings if any(w in s.name for w in args.settings)]
    rows = []
    for name in models:
        path = checkpoint_for(name, cache)
        for setting in settings:
            size = (args.size, args.size) if args.size else None
            rows += measure(name, path, setting, device, size=size, steps=args.steps, runs=args.runs,
                            warmup=args.warmup, cache=cache)
    device_name = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    report = table(rows, device_name)
    if args.switching:
        rss = switching(cache, device, settings[0].dtype if settings else torch.float32,
                        names=("demo", "demo-b") if not cuda else ("sd15", "sd15-b"), ckpt_cache=args.checkpoint_cache)
        report += (f"\nRSS over {len(rss)} checkpoint switches (MiB): " + ", ".join(f"{x:.0f}" for x in rss)
                   + f"\nRSS after switch {len(rss)} / after switch 1: {rss[-1] / rss[0]:.3f}")
    print(report)
    return rows, report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
