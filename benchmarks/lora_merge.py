"""How long merging a LoRA into a full-size model takes, and that applying the same set
again costs nothing. Prints numbers; asserts nothing about time.

    python benchmarks/lora_merge.py --family sd1 --rank 32 --device cpu
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from safetensors.torch import save_file

from modules.models import lora
from modules.models.loader import Attachments
from tests.synthetic import build_modules


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="sd1", choices=["sd1", "sdxl"])
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float16" if torch.cuda.is_available() else "float32")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    started = time.perf_counter()
    unet, _vae, texts = build_modules(args.family, "full")
    unet.to(args.device, dtype)
    texts = [t.to(args.device, dtype) for t in texts]
    model = SimpleNamespace(unet=unet, text_encoders=texts, attachments=Attachments())
    print(f"built full-size {args.family} in {time.perf_counter() - started:.1f}s on {args.device} ({args.dtype})")

    # a kohya LoRA over every attention projection and MLP of the UNet and text encoders
    table = lora.layer_table(model)
    targets = {n: m for n, (m, _) in table.items() if isinstance(m, torch.nn.Linear)
               and (n.startswith("lora_unet_down_blocks") or n.startswith("lora_unet_up_blocks")
                    or n.startswith("lora_unet_mid_block") or n.startswith("lora_te_") or n.startswith("lora_te1_")
                    or n.startswith("lora_te2_")) and ("attn" in n or "ff_net" in n or "mlp" in n or "proj" in n)}
    state = {}
    for name, m in targets.items():
        state[f"{name}.lora_down.weight"] = torch.randn(args.rank, m.in_features, dtype=torch.float16) * 0.01
        state[f"{name}.lora_up.weight"] = torch.randn(m.out_features, args.rank, dtype=torch.float16) * 0.01
        state[f"{name}.alpha"] = torch.tensor(float(args.rank) / 2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.safetensors"
        save_file(state, str(path))
        size = path.stat().st_size / 2**20
        wanted = [lora.Activation("bench", path, 1.0, 1.0)]

        def timed(what, fn):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            print(f"{what:<28} {1000 * (time.perf_counter() - t):8.1f} ms   merges={model.attachments.lora.merges}")

        print(f"LoRA: {len(targets)} layers, rank {args.rank}, {size:.0f} MiB")
        timed("apply", lambda: lora.activate(model, wanted))
        timed("apply the same set again", lambda: lora.activate(model, wanted))
        timed("weight 0.5 (restore + apply)", lambda: lora.activate(model, [lora.Activation("bench", path, .5, .5)]))
        timed("remove (restore)", lambda: lora.activate(model, []))


if __name__ == "__main__":
    main()
