"""The sampler table: A1111's sampler and schedule-type names (the one copy of their
resolution, legacy "DPM++ 2M Karras" names included) -> diffusers schedulers that run
A1111's sigmas.

A1111 runs k-diffusion's samplers on a sigma schedule it computes from the model's 1000
training sigmas. diffusers has a scheduler class for each of those algorithms, but builds
its schedules a little differently (its "linspace" interpolates sigma, not log-sigma; its
Karras uses other end points; it rounds some timesteps). So we compute the sigmas as A1111
does (`sigmas_for`) and install them in a diffusers scheduler (`create_scheduler`). Each
scheduler is a thin subclass of its diffusers class that

- takes our sigmas (`_install`), laid out as that class expects (Heun and DPM2 interleave
  a second evaluation per step), with the fractional timesteps A1111 gives the UNet;
- accepts `generator=` in `step()` even where the diffusers class does not;
- for the SDE samplers, draws its noise from Brownian trees seeded per image with each
  generator's seed, as A1111 does, so image i of a batch equals a single run of seed+i.

The denoising loop (modules/generation/loop.py) is the plain diffusers one:

    latents = noise * sch.init_noise_sigma
    for t in sch.timesteps:
        eps = unet(sch.scale_model_input(torch.cat([latents] * 2), t), t, ...)   # + CFG
        latents = sch.step(eps, t, latents, generator=generators).prev_sample

Exact (agrees with k-diffusion given the same denoiser, noise and seeds; tests/test_samplers.py
checks each against k-diffusion's own code): Euler, Euler a, LMS, Heun, DPM2, DPM2 a,
DPM++ 2S a, DPM++ 2M, DPM++ SDE, DPM++ 2M SDE, DPM++ 2M SDE Heun, DPM++ 3M SDE.
Approximate (A1111 has its own implementations; we use diffusers' as configured for SD):
DDIM, PLMS, UniPC, LCM.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field

import torch
from diffusers import DDIMScheduler, LCMScheduler, PNDMScheduler

from modules.sampling.diffusers_schedulers import (_SDE, KilnDDIMScheduler, KilnDPM2AncestralScheduler,
                                                   KilnDPM2Scheduler, KilnDPMPP2SAncestralScheduler,
                                                   KilnDPMSolverMultistepScheduler, KilnEulerAncestralScheduler,
                                                   KilnEulerScheduler, KilnHeunScheduler, KilnLCMScheduler,
                                                   KilnLMSScheduler, KilnPNDMScheduler, KilnUniPCScheduler,
                                                   _dpmpp_sde_class)
from modules.sampling.schedules import SCHEDULE_TYPES, SD_TRAINING, SIGMA_SCHEDULES, _with_zero, training_sigmas


class SamplerError(ValueError):
    """An unknown sampler or schedule type, or a schedule type the sampler cannot use."""


class UnknownSampler(SamplerError):
    """No sampler by that name or alias (the API answers 404, as A1111)."""


class UnknownScheduleType(SamplerError):
    """No schedule type by that label, name or alias."""


# --- The sampler table ----------------------------------------------------------------------

ALL_SIGMA_SCHEDULES = ("Automatic",) + SIGMA_SCHEDULES


@dataclass(frozen=True)
class Sampler:
    """One entry of the sampler dropdown.

    `scheduler` builds the diffusers scheduler (a class, or a function returning one);
    `config` is applied on top of SD's training schedule. `automatic` is the schedule type
    "Automatic" means for this sampler (A1111 1.10's per-sampler default). Samplers with
    `sigma_based` run our sigmas; the others keep diffusers' own timesteps."""
    name: str
    scheduler: object
    config: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    automatic: str = "Uniform"
    schedule_types: tuple[str, ...] = ALL_SIGMA_SCHEDULES
    sigma_based: bool = True
    discard_penultimate: bool = False  # A1111: compute steps + 1 sigmas, drop the next-to-last
    second_order: bool = False         # two UNet evaluations per step (all but the last)
    brownian_noise: bool = False       # SDE noise from Brownian trees seeded by the image seeds
    ancestral: bool = False
    exact: bool = True                 # agrees with A1111 / k-diffusion given the same noise

    def scheduler_class(self):
        return self.scheduler if isinstance(self.scheduler, type) else self.scheduler()


_SD_TIMESTEP_CONFIG = {"timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": False}
_MULTISTEP = {"final_sigmas_type": "zero", "lower_order_final": False, "euler_at_final": False}

SAMPLERS: dict[str, Sampler] = {s.name: s for s in [
    Sampler("DPM++ 2M", KilnDPMSolverMultistepScheduler,
            {"algorithm_type": "dpmsolver++", "solver_order": 2, **_MULTISTEP},
            aliases=("k_dpmpp_2m", "dpmpp_2m"), automatic="Karras"),
    Sampler("DPM++ SDE", _dpmpp_sde_class, aliases=("k_dpmpp_sde", "dpmpp_sde", "dpmpp_sde_gpu"),
            automatic="Karras", second_order=True, brownian_noise=True),
    Sampler("DPM++ 2M SDE", KilnDPMSolverMultistepScheduler,
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "midpoint", **_MULTISTEP},
            aliases=("k_dpmpp_2m_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu"), automatic="Exponential",
            brownian_noise=True),
    Sampler("DPM++ 2M SDE Heun", KilnDPMSolverMultistepScheduler,
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun", **_MULTISTEP},
            aliases=("k_dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun"), automatic="Exponential", brownian_noise=True),
    Sampler("DPM++ 2S a", KilnDPMPP2SAncestralScheduler, aliases=("k_dpmpp_2s_a", "dpmpp_2s_ancestral"),
            automatic="Karras", second_order=True, ancestral=True),
    Sampler("DPM++ 3M SDE", KilnDPMSolverMultistepScheduler,
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 3, "solver_type": "heun", **_MULTISTEP},
            aliases=("k_dpmpp_3m_sde", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu"), automatic="Exponential",
            discard_penultimate=True, brownian_noise=True),
    Sampler("Euler a", KilnEulerAncestralScheduler, aliases=("k_euler_a", "k_euler_ancestral", "euler_ancestral"),
            ancestral=True),
    Sampler("Euler", KilnEulerScheduler, aliases=("k_euler", "euler")),
    Sampler("LMS", KilnLMSScheduler, aliases=("k_lms", "lms")),
    Sampler("Heun", KilnHeunScheduler, aliases=("k_heun", "heun"), second_order=True),
    Sampler("DPM2", KilnDPM2Scheduler, aliases=("k_dpm_2", "dpm_2"), automatic="Karras",
            discard_penultimate=True, second_order=True),
    Sampler("DPM2 a", KilnDPM2AncestralScheduler, aliases=("k_dpm_2_a", "dpm_2_ancestral"), automatic="Karras",
            discard_penultimate=True, second_order=True, ancestral=True),
    # Order 3 as A1111; variant bh2 (bh1 computes 0 * inf on the last step, to sigma 0);
    # Karras for Automatic, as UniPC's big last steps on the Uniform schedule lose accuracy.
    Sampler("UniPC", KilnUniPCScheduler,
            {"solver_order": 3, "solver_type": "bh2", "lower_order_final": True, "final_sigmas_type": "zero"},
            aliases=("unipc", "uni_pc", "uni_pc_bh2"), automatic="Karras", exact=False),
    Sampler("DDIM", KilnDDIMScheduler, {**_SD_TIMESTEP_CONFIG, "clip_sample": False}, aliases=("ddim",), automatic="Automatic",
            schedule_types=("Automatic", "SGM Uniform"), sigma_based=False, exact=False),
    Sampler("PLMS", KilnPNDMScheduler, {**_SD_TIMESTEP_CONFIG, "skip_prk_steps": True}, aliases=("plms", "pndm"),
            automatic="Automatic", schedule_types=("Automatic", "SGM Uniform"), sigma_based=False, exact=False),
    Sampler("LCM", KilnLCMScheduler, aliases=("lcm", "k_lcm"), automatic="Automatic", schedule_types=("Automatic",),
            sigma_based=False, ancestral=True, exact=False),
]}


# --- Names ----------------------------------------------------------------------------------

def _norm(name: str) -> str:
    return " ".join(str(name).strip().lower().split())


_SAMPLER_LOOKUP = {_norm(k): s.name for s in SAMPLERS.values() for k in (s.name, *s.aliases)}
_SCHEDULE_LOOKUP = {_norm(k): st.label for st in SCHEDULE_TYPES.values() for k in (st.label, st.name, *st.aliases)}
# ComfyUI's scheduler names, for metadata written by ComfyUI
_SCHEDULE_LOOKUP.update({"ddim_uniform": "DDIM"})


def sampler_names() -> list[str]:
    """The sampler dropdown, in A1111's order."""
    return list(SAMPLERS)


def schedule_types() -> list[str]:
    """Every schedule type label."""
    return list(SCHEDULE_TYPES)


def schedule_types_for(sampler_name: str) -> list[str]:
    """The schedule types this sampler accepts ("Automatic" first)."""
    return list(get_sampler(sampler_name).schedule_types)


def get_sampler(name: str) -> Sampler:
    """The sampler called `name` or one of its aliases, case-insensitively."""
    key = _SAMPLER_LOOKUP.get(_norm(name)) if name is not None else None
    if key is None:
        raise UnknownSampler(f"Unknown sampler {name!r}. Valid samplers: {', '.join(SAMPLERS)}")
    return SAMPLERS[key]


def get_schedule_type(name: str | None) -> str:
    """The label of schedule type `name` (a label, A1111's internal name or an alias);
    None or "" mean "Automatic"."""
    if name is None or not str(name).strip():
        return "Automatic"
    label = _SCHEDULE_LOOKUP.get(_norm(name))
    if label is None:
        raise UnknownScheduleType(f"Unknown schedule type {name!r}. Valid schedule types: {', '.join(SCHEDULE_TYPES)}")
    return label


def split_legacy_name(name: str) -> tuple[str, str]:
    """Old A1111 names carried the schedule: "DPM++ 2M Karras" -> ("DPM++ 2M", "Karras");
    "Euler a" -> ("Euler a", "Automatic"); "k_dpmpp_2m_ka" -> ("DPM++ 2M", "Karras")."""
    norm = _norm(name)
    if norm in _SAMPLER_LOOKUP:
        return _SAMPLER_LOOKUP[norm], "Automatic"
    if norm.endswith("_ka") and norm[:-3] in _SAMPLER_LOOKUP:
        return _SAMPLER_LOOKUP[norm[:-3]], "Karras"
    for key in sorted(_SCHEDULE_LOOKUP, key=len, reverse=True):
        if norm.endswith(" " + key) and norm[:-len(key) - 1] in _SAMPLER_LOOKUP:
            return _SAMPLER_LOOKUP[norm[:-len(key) - 1]], _SCHEDULE_LOOKUP[key]
    raise UnknownSampler(f"Unknown sampler {name!r}. Valid samplers: {', '.join(SAMPLERS)}")


def resolve_names(sampler_name: str, schedule_type: str | None = "Automatic") -> tuple[str, str]:
    """(sampler name, schedule type label), as A1111's get_sampler_and_scheduler: names and
    aliases in any case; a legacy name carries its schedule type ("DPM++ 2M Karras") and
    that suffix wins over the one given. The one copy of this rule: the API, the infotext
    reader and the engine all call it. UnknownSampler / UnknownScheduleType."""
    try:
        name, legacy = get_sampler(sampler_name).name, None
    except UnknownSampler:
        name, legacy = split_legacy_name(sampler_name)
    label = get_schedule_type(schedule_type)
    if legacy and legacy != "Automatic":
        label = legacy
    return name, label


def resolve(sampler_name: str, schedule_type: str | None = "Automatic") -> tuple[Sampler, str]:
    """(sampler, schedule type label) for a request, checking that they go together."""
    name, label = resolve_names(sampler_name, schedule_type)
    sampler = SAMPLERS[name]
    if label not in sampler.schedule_types:
        raise SamplerError(f"Schedule type {label!r} is not available for sampler {sampler.name!r}. "
                           f"Valid schedule types for it: {', '.join(sampler.schedule_types)}")
    return sampler, label


def validate(sampler_name: str, schedule_type: str | None = "Automatic") -> None:
    """Raise SamplerError if this sampler / schedule type pair cannot run."""
    resolve(sampler_name, schedule_type)


def effective_schedule_type(sampler_name: str, schedule_type: str | None = "Automatic") -> str:
    """The schedule actually used: "Automatic" resolved to the sampler's default (A1111
    writes this one to the infotext, e.g. "Schedule type: Karras" for DPM++ 2M)."""
    sampler, label = resolve(sampler_name, schedule_type)
    return sampler.automatic if label == "Automatic" else label


# --- Sigma schedules and schedulers ---------------------------------------------------------

def _img2img_start(total: int, denoise: float) -> int:
    """A1111's img2img: of a `total`-step schedule run the last int(denoise * total) + 1
    steps (denoise capped at 0.999, so 1.0 runs them all)."""
    if denoise >= 1:
        return 0
    if denoise <= 0:
        raise SamplerError("denoising strength must be > 0")
    t_enc = int(min(denoise, 0.999) * total)
    return max(total - t_enc - 1, 0)


def _check_steps(steps) -> int:
    if isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1:
        return steps
    if isinstance(steps, float) and steps.is_integer() and steps >= 1:
        return int(steps)
    raise SamplerError(f"steps must be a whole number >= 1, not {steps!r}")


def full_sigmas(sampler_name: str, schedule_type: str | None, steps: int, *,
                alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """The whole sigma schedule (float32, descending, ending in 0) for a sampler-based run
    of `steps` steps, before any img2img truncation."""
    sampler, label = resolve(sampler_name, schedule_type)
    steps = _check_steps(steps)
    train = training_sigmas(alphas_cumprod)
    if not sampler.sigma_based:
        sch = _timestep_scheduler(sampler, label, steps, "epsilon", "cpu", alphas_cumprod)
        t = sch.timesteps.unique_consecutive().long().cpu()
        return _with_zero(train[t])
    if label == "Automatic":
        label = sampler.automatic
    n = steps + 1 if sampler.discard_penultimate else steps
    sigmas = SCHEDULE_TYPES[label].function(train, n)
    if sampler.discard_penultimate and len(sigmas) > 2:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def sigmas_for(sampler_name: str, schedule_type: str | None, steps: int, *, denoise: float = 1.0,
               alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """The sigma schedule a run uses: float32, descending, ending in 0, one interval per
    step (for second-order samplers each interval costs two UNet evaluations).

    `denoise` < 1 gives img2img's tail of the schedule as A1111 computes it: the last
    int(denoise * steps) + 1 steps of the full `steps`-step schedule; its first sigma is
    the noise level to add to the init image (`noise_latents` does that). For DDIM, PLMS
    and LCM, which step through timesteps, these are the sigmas of those timesteps.
    `alphas_cumprod`: a checkpoint's own training schedule, if it has one."""
    sigmas = full_sigmas(sampler_name, schedule_type, steps, alphas_cumprod=alphas_cumprod)
    return sigmas[_img2img_start(len(sigmas) - 1, denoise):]


def _training_config(alphas_cumprod: torch.Tensor | None) -> dict:
    if alphas_cumprod is None:
        return dict(SD_TRAINING)
    ac = alphas_cumprod.detach().double().cpu()
    betas = 1 - ac / torch.cat([ac.new_ones(1), ac[:-1]])
    return {"num_train_timesteps": len(ac), "trained_betas": tuple(betas.float().tolist())}


@functools.lru_cache(maxsize=32)
def _prototype(cls, config: tuple):
    return cls(**dict(config))


def _new_scheduler(sampler: Sampler, config: dict):
    """A fresh scheduler: a copy of a cached one, as some classes (KDPM2*, DPMSolverSDE)
    spend a noticeable time in their constructor."""
    return copy.deepcopy(_prototype(sampler.scheduler_class(), tuple(sorted(config.items()))))


def _timestep_scheduler(sampler: Sampler, label: str, steps: int, prediction_type: str, device,
                        alphas_cumprod, denoise: float = 1.0):
    config = {**_training_config(alphas_cumprod), **sampler.config, "prediction_type": prediction_type}
    if label == "SGM Uniform":
        config.update(timestep_spacing="trailing", steps_offset=0)
    sch = _new_scheduler(sampler, config)
    if isinstance(sch, LCMScheduler):
        sch.set_timesteps(steps, device=device, original_inference_steps=max(50, steps))
    else:
        sch.set_timesteps(steps, device=device)
    if denoise < 1:
        unique = sch.timesteps.unique_consecutive()
        keep = unique[_img2img_start(len(unique), denoise):]
        if isinstance(sch, PNDMScheduler) and len(keep) > 1:
            # PLMS evaluates its second timestep twice (a Heun-like start); keep that shape
            keep = torch.cat([keep[:2], keep[1:]])
        sch.timesteps = keep
        if isinstance(sch, PNDMScheduler):
            sch.ets, sch.counter = [], 0
        if hasattr(sch, "set_begin_index") and not isinstance(sch, (DDIMScheduler, PNDMScheduler)):
            sch.set_begin_index(0)
    return sch


def create_scheduler(sampler_name: str, schedule_type: str | None, steps: int, *,
                     prediction_type: str = "epsilon", device="cpu", denoise: float = 1.0,
                     alphas_cumprod: torch.Tensor | None = None):
    """A diffusers scheduler for this A1111 sampler and schedule type, with its timesteps
    set for `steps` steps of SD's training schedule (1000 steps, scaled_linear, betas
    0.00085..0.012, or the checkpoint's `alphas_cumprod`). Run it with the plain loop in
    this module's docstring; `step()` takes `generator=` (one torch.Generator per image).

    `prediction_type`: "epsilon" or "v_prediction". `denoise` < 1: img2img, see
    `sigmas_for`; start from `noise_latents(sch, init_latents, noise)`."""
    sampler, label = resolve(sampler_name, schedule_type)
    steps = _check_steps(steps)
    if prediction_type not in ("epsilon", "v_prediction"):
        raise SamplerError(f"prediction_type must be 'epsilon' or 'v_prediction', not {prediction_type!r}")
    if not sampler.sigma_based:
        return _timestep_scheduler(sampler, label, steps, prediction_type, device, alphas_cumprod, denoise)
    full = full_sigmas(sampler.name, label, steps, alphas_cumprod=alphas_cumprod)
    sigmas = full[_img2img_start(len(full) - 1, denoise):]
    config = {**_training_config(alphas_cumprod), "timestep_spacing": "linspace", **sampler.config,
              "prediction_type": prediction_type}
    sch = _new_scheduler(sampler, config)
    sch.set_timesteps(len(sigmas) - 1, device=device)  # resets the class's own state
    sch._install(sigmas, training_sigmas(alphas_cumprod).log(), device)
    sch.set_begin_index(0)
    if isinstance(sch, _SDE):
        positive = full[full > 0]
        sch.brownian_range = (positive.min().item(), positive.max().item())
    return sch


def noise_latents(sch, init_latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """img2img's starting point: `init_latents` noised to the level of the scheduler's
    first step, on the scale that scheduler works in (init + sigma * noise for the
    k-samplers, as A1111; the variance-preserving scale for DPM++ 2M, UniPC, DDIM...)."""
    return sch.add_noise(init_latents, noise, sch.timesteps[:1])
