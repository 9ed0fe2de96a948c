"""A1111's seeds: -1 is random, image i of a job uses seed + i, each image's noise comes
from its own seed (so image 3 of a batch equals a single run with seed + 3), and a
variation seed blends a second noise in (slerp)."""
from __future__ import annotations

import random
from modules.generation.request import PerImage

import torch


def resolve_seed(seed: int) -> int:
    return int(random.randrange(4294967294)) if seed is None or int(seed) == -1 else int(seed)


def slerp(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spherical blend of two noises (A1111's variation seeds)."""
    an, bn = a / a.norm(), b / b.norm()
    dot = (an * bn).sum().clamp(-1, 1)
    if dot.abs() > 0.9995:
        return (1 - t) * a + t * b
    omega = torch.acos(dot)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def make_noise(seeds: list[int], subseeds: list[int], strength: float, shape: tuple[int, ...]):
    """One noise tensor per image from its own seed (CPU RNG, so results do not depend on
    the device), plus the generators, which go on to drive the sampler's own noise."""
    gens, noises = [], []
    for seed, subseed in zip(seeds, subseeds):
        g = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn(shape, generator=g)
        if strength > 0:
            sub = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(subseed))
            noise = slerp(strength, noise, sub)
        noises.append(noise)
        gens.append(g)
    return torch.stack(noises), gens


def per_image(prompt, negative_prompt, seed, subseed, total: int) -> PerImage:
    """A1111's per-image prompts and seeds for a job of `total` images. `prompt`,
    `negative_prompt`, `seed`, `subseed` are each one value (the same for every image;
    seeds count up from it, -1 first becoming one random seed) or a list (one per image,
    as a prompt matrix sets them: the job then has as many images as prompts)."""
    prompts = list(prompt) if isinstance(prompt, list) else [prompt] * total
    n = len(prompts)
    negatives = list(negative_prompt) if isinstance(negative_prompt, list) else [negative_prompt] * n

    def seeds_for(value) -> list[int]:
        if isinstance(value, list):
            return [int(s) for s in value]
        first = resolve_seed(value)
        return [first + i for i in range(n)]

    return PerImage(prompts, negatives, seeds_for(seed), seeds_for(subseed))
