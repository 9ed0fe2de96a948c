"""A grid of the demo model's outputs for the README, generated through the app's own
generation path:  python -m modules.training.grid --out docs/demo-grid.png"""
from __future__ import annotations

import argparse

from PIL import Image

PROMPTS = [
    "a large red circle in the centre on a blue background",
    "a small yellow square at the top on a black background",
    "a large green triangle on the left on a white background",
    "a purple circle at the bottom on a orange background",
    "a large white square on the right on a green background",
]


def main(argv=None):
    from modules.device.devices import choose
    from modules.files.images import image_grid
    from modules.generation.request import GenerationRequest
    from modules.runtime.runtime import REPO_ROOT, Runtime, RuntimeConfig

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="docs/demo-grid.png")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--scale", type=int, default=2, help="enlarge each 64x64 cell this many times")
    args = ap.parse_args(argv)
    runtime = Runtime(RuntimeConfig(data_dir=REPO_ROOT, device=choose()))
    cells = []
    for prompt in PROMPTS:
        result = runtime.generate(GenerationRequest(prompt=prompt, seed=1, batch_size=args.seeds, save_images=False))
        cells += [im.resize((im.width * args.scale, im.height * args.scale), Image.Resampling.NEAREST) for im in result.images]
    out = REPO_ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(cells, rows=len(PROMPTS)).save(out)
    print(f"wrote {out}: rows = {PROMPTS}, columns = seeds 1..{args.seeds}, 20 steps, Euler a, CFG 7")


if __name__ == "__main__":
    main()
