"""Evaluate the demo model through the normal generation path.

    python -m modules.training.evaluate --prompts 40 --seeds 2

Generates prompts from the shapes grammar, classifies each image by simple image
analysis (shapes_world.classify) and prints the accuracies and seconds per image.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from modules.generation.request import GenerationRequest
from modules.training.shapes_world import POSITIONS, SHAPES, Scene, classify, random_scene


@dataclass
class Score:
    colour: float
    background: float
    shape: float
    position: float  # over prompts that name a position
    seconds_per_image: float
    n: int
    # (asked, got) -> images: which shapes and positions are drawn as which
    shapes_drawn: Counter = field(default_factory=Counter)
    positions_drawn: Counter = field(default_factory=Counter)

    def __str__(self):
        return (f"images: {self.n}\nshape colour accuracy: {self.colour:.1%}\nbackground accuracy: {self.background:.1%}\n"
                f"shape accuracy: {self.shape:.1%}\n{_per_word(self.shapes_drawn, SHAPES)}\n"
                f"position accuracy: {self.position:.1%}\n{_per_word(self.positions_drawn, POSITIONS)}\n"
                f"seconds per image: {self.seconds_per_image:.3f}")


def _per_word(drawn: Counter, words) -> str:
    """'  circle: 9/10 (square 1)': each asked word's hits, then what it came out as instead."""
    lines = []
    for word in words:
        asked = {got: k for (want, got), k in drawn.items() if want == word}
        misses = ", ".join(f"{got or 'nothing'} {k}" for got, k in sorted(asked.items(), key=lambda x: -x[1]) if got != word)
        lines.append(f"  {word}: {asked.get(word, 0)}/{sum(asked.values())}" + (f" ({misses})" if misses else ""))
    return "\n".join(lines)


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
    shapes_drawn, positions_drawn = Counter(), Counter()
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
            shapes_drawn[scene.shape, got.shape] += 1
            if with_position:
                positioned += 1
                hits["position"] += got.position == scene.position
                positions_drawn[scene.position, got.position] += 1
    return Score(hits["colour"] / n, hits["background"] / n, hits["shape"] / n,
                 hits["position"] / max(positioned, 1), seconds / n, n, shapes_drawn, positions_drawn)


def main(argv=None):
    import torch

    from modules.device.devices import choose
    from modules.models.detect import CheckpointError
    from modules.runtime.runtime import REPO_ROOT, Runtime, RuntimeConfig

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
    name = path.name if folders else args.ckpt
    runtime = Runtime(RuntimeConfig(data_dir=REPO_ROOT, device=choose(), ckpt=name, ckpt_dirs=folders))
    try:  # by name: a mistyped path must fail, not score the default checkpoint instead
        runtime.checkpoints.load(name)
    except CheckpointError as e:
        sys.exit(f"evaluate: {e}")
    print(evaluate(runtime, args.prompts, args.seeds, args.seed, args.steps, args.sampler, args.cfg))


if __name__ == "__main__":
    main()
