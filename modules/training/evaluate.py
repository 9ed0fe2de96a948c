"""Evaluate the demo model through the normal generation path.

    python -m modules.training.evaluate --prompts 40 --seeds 2

Generates prompts from the shapes grammar, classifies each image by simple image
analysis (shapes_world.classify) and prints the accuracies and seconds per image.
"""
from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass
from pathlib import Path

from modules.request import GenerationRequest
from modules.training.shapes_world import Scene, classify, random_scene


@dataclass
class Score:
    colour: float
    background: float
    shape: float
    position: float  # over prompts that name a position
    seconds_per_image: float
    n: int

    def __str__(self):
        return (f"images: {self.n}\nshape colour accuracy: {self.colour:.1%}\nbackground accuracy: {self.background:.1%}\n"
                f"shape accuracy: {self.shape:.1%}\nposition accuracy: {self.position:.1%}\n"
                f"seconds per image: {self.seconds_per_image:.3f}")


def eval_prompts(count: int, seed: int) -> list[tuple[str, Scene, bool]]:
    """(prompt, scene, names_position): full captions, with and without a position."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        scene = random_scene(rng)
        with_position = i % 2 == 0
        prompt = f"a {scene.size} {scene.colour} {scene.shape}"
        if with_position:
            prompt += f" {scene.position}"
        prompt += f" on a {scene.background} background"
        out.append((prompt, scene, with_position))
    return out


def evaluate(runtime, prompts: int = 40, seeds: int = 2, seed: int = 1000, steps: int = 20,
             sampler: str = "Euler a", cfg: float = 7.0, checkpoint: str | None = None) -> Score:
    hits = {"colour": 0, "background": 0, "shape": 0, "position": 0}
    positioned = n = 0
    seconds = 0.0
    for i, (prompt, scene, with_position) in enumerate(eval_prompts(prompts, seed)):
        request = GenerationRequest(prompt=prompt, steps=steps, sampler_name=sampler, cfg_scale=cfg,
                                    seed=seed * 7 + i * 101, batch_size=seeds, save_images=False, checkpoint=checkpoint)
        started = time.perf_counter()
        result = runtime.generate(request)
        seconds += time.perf_counter() - started
        for image in result.images:
            got = classify(image)
            n += 1
            hits["colour"] += got.colour == scene.colour
            hits["background"] += got.background == scene.background
            hits["shape"] += got.shape == scene.shape
            if with_position:
                positioned += 1
                hits["position"] += got.position == scene.position
    return Score(hits["colour"] / n, hits["background"] / n, hits["shape"] / n,
                 hits["position"] / max(positioned, 1), seconds / n, n)


def main(argv=None):
    import torch

    from modules.devices import choose
    from modules.runtime import REPO_ROOT, Runtime, RuntimeConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=2, help="images per prompt")
    ap.add_argument("--seed", type=int, default=1000, help="picks the prompts and the image seeds")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sampler", default="Euler a")
    ap.add_argument("--cfg", type=float, default=7.0)
    ap.add_argument("--ckpt", default="kiln-demo-shapes.safetensors",
                    help="a checkpoint's name, or the path of a file anywhere (a model being trained)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.ckpt)
    folders = [path.resolve().parent] if path.is_file() else []
    runtime = Runtime(RuntimeConfig(data_dir=REPO_ROOT, device=choose(), ckpt=path.name if folders else args.ckpt,
                                    ckpt_dirs=folders))
    runtime.load_model()
    print(evaluate(runtime, args.prompts, args.seeds, args.seed, args.steps, args.sampler, args.cfg))


if __name__ == "__main__":
    main()
