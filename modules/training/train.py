"""Train the demo checkpoint from scratch: VAE, then text encoder + UNet, then the decoder alone.

    python -m modules.training.train            # writes models/Stable-diffusion/kiln-demo-shapes.safetensors

Small Stable Diffusion 1.x architecture (CLIP text encoder with the real CLIP tokenizer,
UNet2DConditionModel with cross-attention, AutoencoderKL), epsilon prediction on SD1's
scaled-linear schedule, EMA weights, caption dropout for classifier-free guidance.
Resumable: state is saved every few hundred steps under --work-dir and picked up again.
The file is written in the original single-file (LDM) layout with fp16 weights.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from modules.training.dataset import DATA_VERSION, generate

SD1_LATENT_SCALE = 0.18215  # the loader uses SD1's factor; we fold ours into the VAE


def build_models(resolution: int, latent_factor: int = 8):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=3,
        num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    blocks = int(math.log2(latent_factor)) + 1  # each block after the first halves the side
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=(32,) + (64,) * (blocks - 1), sample_size=resolution, scaling_factor=SD1_LATENT_SCALE)
    unet = UNet2DConditionModel(
        sample_size=resolution // latent_factor, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(64, 64, 128), norm_num_groups=32, cross_attention_dim=64,
        attention_head_dim=8,  # SD1 convention: 8 heads (the loader assumes it for SD1 files)
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    return text, vae, unet


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def encode_captions(text, tokenizer, captions: list[str]) -> torch.Tensor:
    """The text encoder's hidden states for captions padded to CLIP's 77 tokens, as SD1 reads them."""
    ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return text(ids).last_hidden_state


def reconstruction_loss(rec: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The VAE's picture loss: one definition, so the decoder's polish keeps optimising
    what the VAE was trained for."""
    return F.mse_loss(rec, x0) + 0.5 * F.l1_loss(rec, x0)


def train_vae(vae, images, steps, batch, crop, rng, state, save):
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    if "vae_opt" in state:
        opt.load_state_dict(state["vae_opt"])
    start = state.get("vae_step", 0)
    n, size = images.shape[0], images.shape[1]
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="vae")
    for step in bar:
        idx = rng.integers(0, n, batch)
        # random crops: the VAE is convolutional, and a quarter of the pixels is a quarter of the cost
        c = crop if step < steps * 3 // 4 else size
        y, x = rng.integers(0, size - c + 1, 2)
        x0 = to_tensor(images[idx, y:y + c, x:x + c])
        post = vae.encode(x0).latent_dist
        rec = vae.decode(post.sample()).sample
        kl = post.kl().mean() / (c * c)
        loss = reconstruction_loss(rec, x0) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 250 == 0 or step + 1 == steps:
            save(vae_step=step + 1, vae_opt=opt.state_dict())


def polish_decoder(vae, images, steps, batch, seed, state, save, guided=None):
    """Train the decoder alone on whole pictures, the encoder frozen. The latents the UNet
    learned are the encoder's, so they stay valid; the decoder only learns to draw them
    better. It has its own random generator, so it never changes the UNet phase's draws.

    `guided` is (latents, index into images) from guided_latents: half of each batch is
    those latents with the pictures they started from as the target, so the decoder learns
    to draw what guidance makes of a shape as that shape (an 8x VAE's decoder, trained on
    real latents alone, drew guided squares as four-pointed stars)."""
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.Adam(params, lr=3e-4)
    if "decoder_opt" in state:
        opt.load_state_dict(state["decoder_opt"])
    start = state.get("decoder_step", 0)
    rng = np.random.default_rng([seed, start, 77])
    vae.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="decoder")
    for step in bar:
        real = rng.integers(0, images.shape[0], batch // 2 if guided else batch)
        with torch.no_grad():
            z = vae.encode(to_tensor(images[real])).latent_dist.mean
        targets = images[real]
        if guided:
            pick = rng.integers(0, guided[0].shape[0], batch - len(real))
            z = torch.cat([z, guided[0][pick]])
            targets = np.concatenate([targets, images[guided[1][pick]]])
        loss = reconstruction_loss(vae.decode(z).sample, to_tensor(targets))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 250 == 0 or step + 1 == steps:
            save(decoder_step=step + 1, decoder_opt=opt.state_dict())
    vae.requires_grad_(False)


def sd1_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2  # SD1 scaled-linear
    return torch.cumprod(1 - betas, 0)


@torch.no_grad()
def guided_latents(text, unet, tokenizer, latents, scenes, count, seed, batch=64,
                   steps=20, start_t=(150, 650), cfg=(4.0, 9.0)) -> tuple[torch.Tensor, np.ndarray]:
    """Latents as a guided sampler leaves them, each paired with the picture it started from.

    Each real latent is noised to a timestep in `start_t` and denoised back with the
    scene's caption at a CFG scale in `cfg` (Euler over `steps` evenly spaced timesteps,
    the rest of a 20-step txt2img). Even at t=300 the unconditional model, unsure between
    shapes, rounds a square's corners where the conditional one does not; CFG 7 pushes the
    result six times that difference the other way, and a decoder trained on real latents
    alone draws the pushed square as a four-pointed star. Returns (count, 4, h, w) latents
    in the VAE's units and the index of the picture each one started from."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng([seed, 5])
    ac = sd1_alphas_cumprod()
    timesteps = np.linspace(999, 0, steps).round().astype(int)
    sigma = lambda t: ((1 - ac[t]) / ac[t]).sqrt()
    empty = encode_captions(text, tokenizer, [""])
    out, index = [], rng.integers(0, latents.shape[0], count)
    for b in range(0, count, batch):
        idx = index[b:b + batch]
        first = int(np.argmax(timesteps <= rng.integers(*start_t)))
        scale = torch.from_numpy(rng.uniform(*cfg, len(idx))).float().view(-1, 1, 1, 1)
        context = torch.cat([encode_captions(text, tokenizer, [scenes[i].caption() for i in idx]), empty.expand(len(idx), -1, -1)])
        x0 = latents[idx] * SD1_LATENT_SCALE
        x = x0 + sigma(timesteps[first]) * torch.randn(x0.shape, generator=g)
        for i in range(first, steps):
            s = sigma(timesteps[i])
            eps = unet(torch.cat([x, x]) / (s ** 2 + 1).sqrt(), int(timesteps[i]), context).sample
            eps_c, eps_u = eps.chunk(2)
            denoised = x - s * (eps_u + scale * (eps_c - eps_u))
            s_next = sigma(timesteps[i + 1]) if i + 1 < steps else 0.0
            x = denoised + (x - denoised) * (s_next / s)  # Euler: straight on towards the estimate
        out.append(x / SD1_LATENT_SCALE)
    return torch.cat(out), index


@torch.no_grad()
def fold_latent_scale(vae, images) -> torch.Tensor:
    """Scale the encoder's output so latents * 0.18215 have unit variance, as SD1 assumes,
    and scale the decoder's input back; returns the (scaled) latent means of the data."""
    means = torch.cat([vae.encode(to_tensor(images[i:i + 256])).latent_dist.mean for i in range(0, len(images), 256)])
    k = 1.0 / (means.std().item() * SD1_LATENT_SCALE)
    c = vae.config.latent_channels
    vae.quant_conv.weight[:c] *= k
    vae.quant_conv.bias[:c] *= k
    vae.quant_conv.bias[c:] += 2 * math.log(k)  # log-variance follows the mean's scale
    vae.post_quant_conv.weight /= k
    return means * k


def multiscale_noise(shape, low_weight: float | torch.Tensor, generator=None) -> torch.Tensor:
    """Unit-variance training noise with extra energy at every coarser scale (the latent's
    own size, then halves down to one value per channel).

    SD1's schedule never reaches zero signal: at t=999, 7% of the latent is still image. On
    a latent as small as the demo's the mean of the noisy input gives the background away, and
    the quadrant means give the shape's position. A model trained on white noise learns to
    read them there instead of from the prompt, and at inference, where the input is pure
    noise, the seed picks the background (seen on the first shipped model: background right
    37% of the time, 12.5% being chance). Noise that is strong at coarse scales hides that
    leak, so the prompt is the only place left to learn the layout from (the idea behind
    "offset noise"); the samplers are unchanged, they start from plain Gaussian noise."""
    b, c, h, w = shape
    noise = torch.randn(shape, generator=generator)
    if isinstance(low_weight, torch.Tensor):  # one weight per sample
        low_weight = low_weight.view(b, 1, 1, 1)
    variance = 1.0
    size = h // 2
    while True:
        coarse = torch.randn((b, c, max(size, 1), max(size, 1)), generator=generator)
        noise += low_weight * F.interpolate(coarse, size=(h, w), mode="nearest")
        variance += low_weight ** 2
        if size <= 1:
            break
        size //= 2
    return noise / (variance.sqrt() if isinstance(variance, torch.Tensor) else math.sqrt(variance))


def train_unet(text, unet, latents, scenes, tokenizer, args, rng, py_rng, state, save):
    params = list(unet.parameters()) + list(text.parameters())
    # the text encoder learns 10x slower than the UNet: at the same rate its colour words,
    # the first thing the UNet learns to use, grew until the final layer norm squashed the
    # rest, and "circle" and "square" came out over 100x closer than "red" and "green"
    # (0.07 against 8.7 in norm) while they start out alike (about 2). A slower encoder
    # keeps every word's random features while the UNet learns to read them.
    opt = torch.optim.AdamW([{"params": list(unet.parameters())},
                             {"params": list(text.parameters()), "lr": args.lr * args.text_lr_scale}],
                            lr=args.lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))))
    ema_unet, ema_text = EMA(unet, args.ema), EMA(text, args.ema)
    if "unet_opt" in state:
        opt.load_state_dict(state["unet_opt"])
        sched.load_state_dict(state["unet_sched"])
        ema_unet.shadow, ema_text.shadow = state["ema_unet"], state["ema_text"]
    alphas_cumprod = sd1_alphas_cumprod()
    start = state.get("unet_step", 0)
    n = latents.shape[0]
    total = args.steps + args.refine_steps
    low_noise, noise_gen = args.low_noise, None
    bar = tqdm(range(start, total), initial=start, total=total, desc="unet")
    for step in bar:
        if step == args.steps or step == start > args.steps:
            # the refining phase: weaker coarse noise (see multiscale_noise) at the last
            # learning rate, with a faster EMA so the result is the refined weights. Its
            # random draws are seeded here, so a run resumed at this step ends the same
            rng = np.random.default_rng([args.seed, args.vae_steps, step])
            py_rng = random.Random(args.seed + step)
            noise_gen = torch.Generator().manual_seed(args.seed + step)
            low_noise = args.refine_low_noise
            ema_unet.decay = ema_text.decay = args.refine_ema
        idx = rng.integers(0, n, args.batch)
        captions = ["" if py_rng.random() < args.caption_dropout else scenes[i].caption(py_rng) for i in idx]
        x0 = latents[idx] * SD1_LATENT_SCALE
        t = torch.from_numpy(rng.integers(0, 1000, args.batch))
        # with --low-noise-ramp the coarse noise grows with t: the leak it hides is only
        # readable at high noise, and at low noise it only differs from what samplers add
        weight = low_noise * t.float() / 999 if args.low_noise_ramp else low_noise
        noise = multiscale_noise(x0.shape, weight, noise_gen) if low_noise else torch.randn_like(x0)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        cond = encode_captions(text, tokenizer, captions)
        loss = F.mse_loss(unet(xt, t, cond).sample, noise, reduction="none").mean((1, 2, 3))
        if args.snr_gamma:
            # Min-SNR weighting (Hang et al. 2023): the easy low-noise steps, where the
            # picture is already decided, count less; layout and shape are settled at
            # high noise, which is where the prompt's words matter
            snr = a.view(-1) / (1 - a.view(-1))
            loss = loss * snr.clamp(max=args.snr_gamma) / snr
        loss = loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema_unet.update(unet, step)
        ema_text.update(text, step)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 250 == 0 or step + 1 in (args.steps, total):
            save(unet_step=step + 1, unet_opt=opt.state_dict(), unet_sched=sched.state_dict(),
                 ema_unet=ema_unet.shadow, ema_text=ema_text.shadow)
    return ema_unet.shadow, ema_text.shadow


def export(path: Path, text_sd, vae, unet_sd, unet_cfg, recipe: dict):
    from safetensors.torch import save_file

    from modules.models.ldm_layout import sd1_text_to_ldm, unet_to_ldm, vae_to_ldm

    state = {}
    state.update(unet_to_ldm(unet_sd, unet_cfg["layers_per_block"]))
    state.update(vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels)))
    state.update(sd1_text_to_ldm(text_sd))
    state = {k: (v.half() if v.dtype.is_floating_point else v).contiguous() for k, v in state.items()}
    res = recipe["resolution"]
    metadata = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-v1",
        "modelspec.title": "Kiln demo: shapes",
        "modelspec.description": "A tiny SD1-architecture model trained by Kiln on flat shapes. Prompts: "
                                 "'a [small|large] <colour> <shape> [on the left|...] on a <colour> background'.",
        "modelspec.resolution": f"{res}x{res}",
        "modelspec.prediction_type": "epsilon",
        "kiln.recipe": json.dumps(recipe),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata=metadata)
    tmp.replace(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models/Stable-diffusion/kiln-demo-shapes.safetensors")
    ap.add_argument("--work-dir", default=".cache/demo-training")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--latent-factor", type=int, default=8, choices=(4, 8),
                    help="image side / latent side (SD1's own VAE: 8)")
    ap.add_argument("--vae-steps", type=int, default=3000)
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--decoder-steps", type=int, default=3000,
                    help="after the UNet: steps training the VAE's decoder alone, on whole pictures")
    ap.add_argument("--decoder-guided", type=int, default=4096,
                    help="latents run through the guided sampler from real pictures, for the decoder's polish (0: none)")
    ap.add_argument("--steps", type=int, default=5600, help="UNet + text encoder steps")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--caption-dropout", type=float, default=0.1,
                    help="share of empty captions: what the negative prompt and CFG's unconditional half learn from")
    ap.add_argument("--text-lr-scale", type=float, default=0.1, help="the text encoder's learning rate / --lr")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--snr-gamma", type=float, default=0, help="Min-SNR loss weighting's gamma (0: plain loss)")
    ap.add_argument("--low-noise", type=float, default=0.5,
                    help="weight of the extra noise at each coarser scale (0: plain white noise)")
    ap.add_argument("--low-noise-ramp", action=argparse.BooleanOptionalAction, default=True,
                    help="scale the coarse noise's weight with the timestep (full at t=999, none at t=0)")
    ap.add_argument("--refine-steps", type=int, default=800,
                    help="steps after --steps with --refine-low-noise: cleaner shapes, prompt binding kept")
    ap.add_argument("--refine-low-noise", type=float, default=0.2)
    ap.add_argument("--refine-ema", type=float, default=0.995)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--export-only", action="store_true",
                    help="write the checkpoint from the saved state's EMA weights now (an unfinished run is marked so)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from modules.models.tokenizer import load_clip_tokenizer

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    recipe = {"command": "python -m modules.training.train " + shlex.join(sys.argv[1:] if argv is None else argv),
              "seed": args.seed, "vae_steps": args.vae_steps, "decoder_steps": args.decoder_steps,
              "decoder_guided": args.decoder_guided,
              "steps": args.steps, "batch": args.batch, "images": args.images, "resolution": args.resolution,
              "latent_factor": args.latent_factor, "data_version": DATA_VERSION, "low_noise": args.low_noise,
              "low_noise_ramp": args.low_noise_ramp, "text_lr_scale": args.text_lr_scale,
              "caption_dropout": args.caption_dropout, "snr_gamma": args.snr_gamma,
              "refine_steps": args.refine_steps, "refine_low_noise": args.refine_low_noise, "refine_ema": args.refine_ema}
    # what each phase's result depends on (the command line itself may differ, e.g. --threads)
    vae_recipe = json.dumps({k: recipe[k] for k in ("seed", "images", "resolution", "latent_factor", "data_version", "vae_steps")}
                            | {"vae_batch": args.vae_batch}, sort_keys=True)
    # --steps is the total: raising it continues a finished or interrupted run
    # the refining phase comes after --steps, so a state saved up to there serves any refining
    unet_recipe = json.dumps({k: v for k, v in recipe.items()
                              if k not in ("command", "steps", "refine_steps", "refine_low_noise", "refine_ema",
                                          "decoder_steps", "decoder_guided")}
                             | {"lr": args.lr, "ema": args.ema, "low_noise": args.low_noise}, sort_keys=True)
    decoder_recipe = json.dumps({"unet": unet_recipe, "decoder_guided": args.decoder_guided,
                                 "unet_steps": [recipe[k] for k in ("steps", "refine_steps", "refine_low_noise", "refine_ema")]})
    state_file = work / "state.pt"
    torch.manual_seed(args.seed)
    text, vae, unet = build_models(args.resolution, args.latent_factor)
    state = {}
    if state_file.exists():
        state = torch.load(state_file, weights_only=True)
        if state.get("vae_recipe") != vae_recipe:
            print("recipe changed: starting over", file=sys.stderr)
            state = {}
        else:
            vae.load_state_dict(state["vae"])
            if state.get("recipe") != unet_recipe:  # same VAE, new UNet recipe: keep the VAE
                print("UNet recipe changed: keeping the trained VAE, training the UNet from scratch", file=sys.stderr)
                state = {k: v for k, v in state.items() if k.startswith("vae") or k == "latent_scale_folded"}
            else:
                text.load_state_dict(state["text"])
                unet.load_state_dict(state["unet"])
            if "vae_unpolished" in state and state.get("decoder_recipe") != decoder_recipe:
                # the polish learns from the finished UNet's samples: a new UNet redoes it
                print("decoder polish out of date: polishing again", file=sys.stderr)
                vae.load_state_dict(state["vae_unpolished"])
                state = {k: v for k, v in state.items() if not k.startswith("decoder")}
            print(f"resuming: vae step {state.get('vae_step', 0)}, unet step {state.get('unet_step', 0)}")

    def save(**extra):
        state.update(extra, text=text.state_dict(), vae=vae.state_dict(), unet=unet.state_dict(),
                     recipe=unet_recipe, vae_recipe=vae_recipe)
        torch.save(state, work / "state.tmp")
        (work / "state.tmp").replace(state_file)

    if args.export_only:
        if "ema_unet" not in state:
            sys.exit("no UNet training state to export yet")
        recipe["steps_completed"] = state["unet_step"]
        export(Path(args.out), state["ema_text"], vae, state["ema_unet"], unet.config, recipe)
        print(f"wrote {args.out} from step {state['unet_step']} of {args.steps + args.refine_steps}")
        return
    t0 = time.time()
    images, scenes = generate(args.images, args.resolution, args.seed)
    print(f"dataset: {len(scenes)} images in {time.time() - t0:.1f}s")
    # every random draw comes from generators seeded here, so a resumed run ends the same
    rng = np.random.default_rng([args.seed, state.get("vae_step", 0), state.get("unet_step", 0)])
    py_rng = random.Random(args.seed + state.get("unet_step", 0))
    if state.get("vae_step", 0) < args.vae_steps:
        train_vae(vae, images, args.vae_steps, args.vae_batch, args.resolution // 2, rng, state, save)
    vae.eval().requires_grad_(False)
    if "latent_scale_folded" not in state:
        fold_latent_scale(vae, images)
        save(latent_scale_folded=True)
    with torch.no_grad():
        latents = torch.cat([vae.encode(to_tensor(images[i:i + 256])).latent_dist.mean for i in range(0, len(images), 256)])
    tokenizer = load_clip_tokenizer(str(work))
    unet_sd, text_sd = train_unet(text, unet, latents, scenes, tokenizer, args, rng, py_rng, state, save)
    if state.get("decoder_step", 0) < args.decoder_steps:
        # the VAE as the UNet learned it, so a changed polish starts from it again
        state.setdefault("vae_unpolished", {k: v.clone() for k, v in vae.state_dict().items()})
        state["decoder_recipe"] = decoder_recipe
        guided = None
        if args.decoder_guided:  # sampled by the weights that ship (EMA), in copies: state keeps the raw ones
            text_ema, unet_ema = copy.deepcopy(text), copy.deepcopy(unet)
            text_ema.load_state_dict(text_sd)
            unet_ema.load_state_dict(unet_sd)
            guided = guided_latents(text_ema.eval(), unet_ema.eval(), tokenizer, latents, scenes, args.decoder_guided, args.seed)
        polish_decoder(vae, images, args.decoder_steps, args.vae_batch, args.seed, state, save, guided)
    recipe["steps_completed"] = args.steps + args.refine_steps
    export(Path(args.out), text_sd, vae, unet_sd, unet.config, recipe)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB) in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
