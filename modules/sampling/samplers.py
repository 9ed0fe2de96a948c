"""A1111 sampler and schedule-type names -> diffusers schedulers that run A1111's sigmas.

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

The denoising loop (modules/processing.py) is the plain diffusers one:

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
import inspect
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, KDPM2AncestralDiscreteScheduler,
                       KDPM2DiscreteScheduler, LCMScheduler, LMSDiscreteScheduler, PNDMScheduler,
                       UniPCMultistepScheduler)
from diffusers.schedulers.scheduling_k_dpm_2_ancestral_discrete import KDPM2AncestralDiscreteSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor


class SamplerError(ValueError):
    """An unknown sampler or schedule type, or a schedule type the sampler cannot use."""


# --- Stable Diffusion's training noise schedule --------------------------------------------

SD_TRAINING = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
               "beta_schedule": "scaled_linear"}


def sd_alphas_cumprod() -> torch.Tensor:
    """SD's alphas_cumprod as the original LDM code computes it (float64 betas and
    product, stored as float32), which is what A1111 reads from the model."""
    betas = torch.linspace(SD_TRAINING["beta_start"] ** 0.5, SD_TRAINING["beta_end"] ** 0.5,
                           SD_TRAINING["num_train_timesteps"], dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


def training_sigmas(alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """The model's 1000 training sigmas, ascending, float32 (k-diffusion's
    CompVisDenoiser.sigmas). Pass a checkpoint's own `alphas_cumprod` to use it instead."""
    ac = sd_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod.detach().float().cpu()
    return ((1 - ac) / ac) ** 0.5


def t_to_sigma(t: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    """Sigma at fractional training timestep t: log-sigma interpolated linearly between
    the two neighbouring training timesteps."""
    t = t.float()
    lo = t.floor().long()
    hi = t.ceil().long()
    frac = t - lo
    return (log_sigmas[lo] * (1 - frac) + log_sigmas[hi] * frac).exp()


def sigma_to_t(sigma: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    """The inverse of `t_to_sigma` (clamped to [0, len-1]): the fractional timestep the
    UNet is given for a sigma, as in A1111."""
    log_sigma = sigma.float().log()
    hi = torch.searchsorted(log_sigmas, log_sigma).clamp(1, len(log_sigmas) - 1)
    lo = hi - 1
    w = ((log_sigma - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])).clamp(0, 1)
    return lo.float() + w


# --- Schedule types: n steps -> n + 1 sigmas ending in 0 ----------------------------------
# Each function takes the training sigmas (ascending) and the number of steps. sigma_min
# and sigma_max are the model's smallest and largest training sigma, as in A1111.

def _with_zero(sigmas) -> torch.Tensor:
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def _uniform(train: torch.Tensor, n: int) -> torch.Tensor:
    # k-diffusion's CompVisDenoiser.get_sigmas(n): n timesteps evenly from 999 down to 0
    t = torch.linspace(len(train) - 1, 0, n)
    return _with_zero(t_to_sigma(t, train.log()))


def _sgm_uniform(train: torch.Tensor, n: int) -> torch.Tensor:
    # n + 1 evenly spaced timesteps from 999 to 0, the last dropped (SGM's "trailing")
    t = torch.linspace(len(train) - 1, 0, n + 1)[:-1]
    return _with_zero(t_to_sigma(t, train.log()))


def _karras(train: torch.Tensor, n: int, rho: float = 7.0) -> torch.Tensor:
    # Karras et al. (2022), eq. 5: evenly spaced in sigma ** (1 / rho)
    lo, hi = train[0].item() ** (1 / rho), train[-1].item() ** (1 / rho)
    ramp = torch.linspace(0, 1, n)
    return _with_zero((hi + ramp * (lo - hi)) ** rho)


def _exponential(train: torch.Tensor, n: int) -> torch.Tensor:
    # evenly spaced in log sigma
    return _with_zero(torch.linspace(math.log(train[-1].item()), math.log(train[0].item()), n).exp())


def _polyexponential(train: torch.Tensor, n: int, rho: float = 1.0) -> torch.Tensor:
    log_min, log_max = math.log(train[0].item()), math.log(train[-1].item())
    ramp = torch.linspace(1, 0, n) ** rho
    return _with_zero(torch.exp(ramp * (log_max - log_min) + log_min))


def _simple(train: torch.Tensor, n: int) -> torch.Tensor:
    # every (1000 / n)-th training sigma, from the top
    stride = len(train) / n
    return _with_zero([train[len(train) - 1 - int(i * stride)].item() for i in range(n)])


def _ddim_uniform(train: torch.Tensor, n: int) -> torch.Tensor:
    # training sigmas 1, 1 + c, 1 + 2c, ... (c = 1000 // n), from the top; like A1111 this
    # can give a step or two more than n when 1000 is not a multiple of n
    stride = max(len(train) // n, 1)
    return _with_zero(train[1::stride].flip(0))


def _beta(train: torch.Tensor, n: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    # "Beta Sampling is All You Need" (Lee et al., 2024); A1111's default alpha = beta = 0.6
    from scipy import stats
    lo, hi = train[0].item(), train[-1].item()
    ppf = stats.beta.ppf(1 - np.linspace(0, 1, n), alpha, beta)
    return _with_zero([lo + float(x) * (hi - lo) for x in ppf])


@dataclass(frozen=True)
class ScheduleType:
    label: str   # shown in the UI and written to the infotext ("Schedule type: Karras")
    name: str    # A1111's internal name, used by /sdapi/v1/schedulers
    function: object = None
    aliases: tuple[str, ...] = ()
    default_rho: float = -1.0


SCHEDULE_TYPES: dict[str, ScheduleType] = {s.label: s for s in [
    ScheduleType("Automatic", "automatic"),
    ScheduleType("Uniform", "uniform", _uniform),
    ScheduleType("Karras", "karras", _karras, default_rho=7.0),
    ScheduleType("Exponential", "exponential", _exponential),
    ScheduleType("Polyexponential", "polyexponential", _polyexponential, default_rho=1.0),
    ScheduleType("SGM Uniform", "sgm_uniform", _sgm_uniform, aliases=("SGMUniform",)),
    ScheduleType("Simple", "simple", _simple),
    ScheduleType("Normal", "normal", _uniform),  # A1111's "normal" computes the same as "uniform"
    ScheduleType("DDIM", "ddim", _ddim_uniform, aliases=("ddim_uniform",)),
    ScheduleType("Beta", "beta", _beta),
]}
SIGMA_SCHEDULES = tuple(label for label in SCHEDULE_TYPES if label != "Automatic")


# --- Scheduler subclasses: A1111's sigmas in diffusers' classes -------------------------

class _KilnScheduler:
    """Mixed into each diffusers class. `_install(sigmas)` puts our schedule in place after
    the class's own set_timesteps has reset its state; `step()` takes `generator=` always."""

    def _install(self, sigmas: torch.Tensor, log_sigmas: torch.Tensor, device) -> None:
        raise NotImplementedError

    def step(self, model_output, timestep, sample, *args, generator=None, **kwargs):
        base_step = super().step
        if generator is not None and "generator" in inspect.signature(base_step).parameters:
            kwargs["generator"] = generator
        return base_step(model_output, timestep, sample, *args, **kwargs)

    def _denoised(self, model_output: torch.Tensor, sample: torch.Tensor, sigma) -> torch.Tensor:
        """x0 from the UNet output at noise level sigma (the input's scale is sigma's)."""
        if self.config.prediction_type == "epsilon":
            return sample - sigma * model_output
        if self.config.prediction_type == "v_prediction":
            return model_output * (-sigma / (sigma ** 2 + 1) ** 0.5) + sample / (sigma ** 2 + 1)
        raise ValueError(f"prediction_type {self.config.prediction_type!r} is not supported by this sampler")


def _interleave(x: torch.Tensor) -> torch.Tensor:
    """[x0, x1, x1, x2, x2, ..., xn, xn, xn]: the per-evaluation layout of diffusers'
    second-order K-schedulers (KDPM2, KDPM2Ancestral)."""
    return torch.cat([x[:1], x[1:].repeat_interleave(2), x[-1:]])


class _FirstOrder(_KilnScheduler):
    """Euler, Euler a, LMS: one evaluation per sigma."""

    def _install(self, sigmas, log_sigmas, device):
        self.sigmas = sigmas
        self.timesteps = sigma_to_t(sigmas[:-1], log_sigmas).to(device)
        self.num_inference_steps = len(sigmas) - 1


class KilnEulerScheduler(_FirstOrder, EulerDiscreteScheduler):
    pass


class KilnEulerAncestralScheduler(_FirstOrder, EulerAncestralDiscreteScheduler):
    pass


class KilnLMSScheduler(_FirstOrder, LMSDiscreteScheduler):
    def _install(self, sigmas, log_sigmas, device):
        super()._install(sigmas, log_sigmas, device)
        self.derivatives = []


class KilnHeunScheduler(_KilnScheduler, HeunDiscreteScheduler):
    """Heun: a second evaluation at the next sigma on every step but the last, which
    (like k-diffusion's, whose last sigma is 0) is an Euler step."""

    def _install(self, sigmas, log_sigmas, device):
        t = sigma_to_t(sigmas[:-1], log_sigmas)
        self.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
        self.timesteps = torch.cat([t[:1], t[1:].repeat_interleave(2)]).to(device)
        self.num_inference_steps = len(sigmas) - 1
        self.prev_derivative = self.dt = self.sample = None


class KilnDPM2Scheduler(_KilnScheduler, KDPM2DiscreteScheduler):
    """DPM2: a second evaluation at the geometric mean of this sigma and the next."""

    def _install(self, sigmas, log_sigmas, device):
        mids = (sigmas[:-1] * sigmas[1:]).sqrt()  # mids[i] lies between sigmas[i] and sigmas[i + 1]
        t = sigma_to_t(sigmas[:-1], log_sigmas)
        t_mid = sigma_to_t(mids[:-1], log_sigmas)  # the last step is an Euler step to 0
        self.sigmas = _interleave(sigmas)
        # diffusers indexes its interpolated sigmas by the step's *end* sigma
        self.sigmas_interpol = _interleave(torch.cat([mids.new_zeros(1), mids]))
        self.timesteps = torch.cat([t[:1], torch.stack([t_mid, t[1:]], dim=1).flatten()]).to(device)
        self.num_inference_steps = len(sigmas) - 1
        self.sample = None


def _ancestral_split(sigmas: torch.Tensor):
    """For each step sigmas[i] -> sigmas[i + 1] with eta 1: the deterministic target
    sigma_down and the fresh noise sigma_up (sigma_down**2 + sigma_up**2 = sigma_next**2)."""
    s, s_next = sigmas[:-1], sigmas[1:]
    up = torch.minimum(s_next, (s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2) ** 0.5)
    down = (s_next ** 2 - up ** 2).clamp_min(0) ** 0.5
    return down, up


class KilnDPM2AncestralScheduler(_KilnScheduler, KDPM2AncestralDiscreteScheduler):
    """DPM2 a: DPM2 towards sigma_down, then noise of sigma_up."""

    def _install(self, sigmas, log_sigmas, device):
        down, up = _ancestral_split(sigmas)
        mids = (sigmas[:-1] * down).sqrt()
        t = sigma_to_t(sigmas[:-1], log_sigmas)
        t_mid = sigma_to_t(mids[:-1], log_sigmas)
        zero = sigmas.new_zeros(1)
        self.sigmas = _interleave(sigmas)
        # diffusers indexes these by the step's *start* sigma
        self.sigmas_interpol = _interleave(torch.cat([mids, zero]))
        self.sigmas_up = _interleave(torch.cat([up, zero]))
        self.sigmas_down = _interleave(torch.cat([down, zero]))
        self.timesteps = torch.cat([t[:1], torch.stack([t_mid, t[1:]], dim=1).flatten()]).to(device)
        self.num_inference_steps = len(sigmas) - 1
        self.sample = None


class KilnDPMPP2SAncestralScheduler(KilnDPM2AncestralScheduler):
    """DPM++ 2S a (DPM-Solver++(2S), ancestral): the same evaluation points as DPM2 a
    (the log-midpoint between sigma and sigma_down), a DPM-Solver++ update instead of
    DPM2's, then noise of sigma_up."""

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        if self.step_index is None:
            self._init_step_index(timestep)
        first = self.state_in_first_order
        i = self.step_index if first else self.step_index - 1
        sigma, mid = self.sigmas[i], self.sigmas_interpol[i]
        denoised = self._denoised(model_output, sample, sigma if first else mid)
        if first:
            self.sample = sample
            target = mid  # the last step has mid == 0: straight to the denoised image
        else:
            sample, self.sample = self.sample, None
            target = self.sigmas_down[i]
        # exponential integrator with the denoised image held constant over the step
        prev = (target / sigma) * sample + (1 - target / sigma) * denoised
        if not first:
            noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                 dtype=model_output.dtype)
            prev = prev + noise * self.sigmas_up[i]
        self._step_index += 1
        if not return_dict:
            return prev, denoised
        return KDPM2AncestralDiscreteSchedulerOutput(prev_sample=prev, pred_original_sample=denoised)


def _generator_seeds(generator):
    """The seed of each generator: A1111 seeds the SDE samplers' Brownian trees with the
    image seeds, and our generators are seeded with those."""
    if generator is None:
        return None
    if isinstance(generator, (list, tuple)):
        return [g.initial_seed() for g in generator]
    return generator.initial_seed()


def _brownian_noise(sample: torch.Tensor, sigma_range, seeds):
    from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler  # needs torchsde
    lo, hi = sigma_range
    return BrownianTreeNoiseSampler(sample, lo, hi, seeds)


class _SDE(_KilnScheduler):
    """Brownian-tree noise over the whole schedule's sigma range (also for img2img, which
    runs only its tail), one tree per image seed."""
    brownian_range: tuple[float, float] | None = None

    def _brownian_range(self):
        if self.brownian_range:
            return self.brownian_range
        s = self.sigmas[self.sigmas > 0]
        return s.min().item(), s.max().item()


@functools.cache
def _dpmpp_sde_class():
    """Built on first use: diffusers' DPMSolverSDEScheduler imports torchsde."""
    from diffusers import DPMSolverSDEScheduler

    class KilnDPMSolverSDEScheduler(_SDE, DPMSolverSDEScheduler):
        """DPM++ SDE: a second evaluation at the log-midpoint of this sigma and the next.
        The Brownian trees are seeded with the generators' seeds (diffusers' own seeds
        them all with one config value, so a batch would not match single runs)."""

        def _install(self, sigmas, log_sigmas, device):
            t = sigma_to_t(sigmas[:-1], log_sigmas)
            t_mid = sigma_to_t((sigmas[:-2] * sigmas[1:-1]).sqrt(), log_sigmas)
            self.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
            self.timesteps = torch.cat([t[:1], torch.stack([t_mid, t[1:]], dim=1).flatten()]).to(device)
            self.num_inference_steps = len(sigmas) - 1
            self.sample = self.mid_point_sigma = self.noise_sampler = None

        def step(self, model_output, timestep, sample, generator=None, **kwargs):
            if self.noise_sampler is None and generator is not None:
                self.noise_sampler = _brownian_noise(sample, self._brownian_range(), _generator_seeds(generator))
            return super().step(model_output, timestep, sample, **kwargs)

    return KilnDPMSolverSDEScheduler


class KilnDPMSolverMultistepScheduler(_SDE, DPMSolverMultistepScheduler):
    """DPM++ 2M / 2M SDE / 3M SDE. diffusers works on the variance-preserving scale
    (x / sqrt(1 + sigma**2)), so the starting noise is scaled to sigma_max on that scale."""

    def _install(self, sigmas, log_sigmas, device):
        self.sigmas = sigmas
        self.timesteps = sigma_to_t(sigmas[:-1], log_sigmas).to(device)
        self.num_inference_steps = len(sigmas) - 1
        self.model_outputs = [None] * self.config.solver_order
        self.lower_order_nums = 0
        self.init_noise_sigma = (sigmas[0] / (sigmas[0] ** 2 + 1) ** 0.5).item()
        self._noise_sampler = None

    def step(self, model_output, timestep, sample, generator=None, variance_noise=None, **kwargs):
        if self.config.algorithm_type == "sde-dpmsolver++" and variance_noise is None and generator is not None:
            if self.step_index is None:
                self._init_step_index(timestep)
            sigma, sigma_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]
            if sigma_next == 0:
                variance_noise = torch.zeros_like(sample)  # the last step adds no noise
            else:
                if self._noise_sampler is None:
                    self._noise_sampler = _brownian_noise(sample, self._brownian_range(), _generator_seeds(generator))
                variance_noise = self._noise_sampler(sigma.item(), sigma_next.item())
        return super().step(model_output, timestep, sample, generator=generator, variance_noise=variance_noise,
                            **kwargs)

    def multistep_dpm_solver_third_order_update(self, model_output_list, *args, sample=None, noise=None, **kwargs):
        if self.config.algorithm_type != "sde-dpmsolver++":
            return super().multistep_dpm_solver_third_order_update(model_output_list, *args, sample=sample,
                                                                   noise=noise, **kwargs)
        # DPM-Solver++(3M) SDE (eta 1) as k-diffusion, and so A1111, runs it. diffusers 0.42's
        # sde branch has the opposite sign on the 0.5 in the D2 coefficient (~ -1 instead of
        # ~ h / 3 for small steps), which throws its results far off.
        i = self.step_index
        (alpha_t, sigma_t), (alpha_0, sigma_0), (alpha_1, sigma_1), (alpha_2, sigma_2) = (
            self._sigma_to_alpha_sigma_t(self.sigmas[k]) for k in (i + 1, i, i - 1, i - 2))
        lambda_t, lambda_0, lambda_1, lambda_2 = (torch.log(a) - torch.log(s) for a, s in (
            (alpha_t, sigma_t), (alpha_0, sigma_0), (alpha_1, sigma_1), (alpha_2, sigma_2)))
        m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
        h = lambda_t - lambda_0
        r0, r1 = (lambda_0 - lambda_1) / h, (lambda_1 - lambda_2) / h
        d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
        d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        hh = 2 * h  # h * (1 + eta)
        phi_1 = -torch.expm1(-hh)
        phi_2 = 1 - phi_1 / hh
        phi_3 = phi_2 / hh - 0.5
        return ((sigma_t / sigma_0 * torch.exp(-h)) * sample
                + alpha_t * (phi_1 * m0 + phi_2 * d1 - phi_3 * d2)
                + sigma_t * torch.sqrt(-torch.expm1(-2.0 * h)) * noise)


class KilnUniPCScheduler(_KilnScheduler, UniPCMultistepScheduler):
    """UniPC on the variance-preserving scale, like DPM++ 2M."""

    def _install(self, sigmas, log_sigmas, device):
        self.sigmas = sigmas
        self.timesteps = sigma_to_t(sigmas[:-1], log_sigmas).to(device)
        self.num_inference_steps = len(sigmas) - 1
        self.model_outputs = [None] * self.config.solver_order
        self.timestep_list = [None] * self.config.solver_order
        self.lower_order_nums = 0
        self.last_sample = None
        self.init_noise_sigma = (sigmas[0] / (sigmas[0] ** 2 + 1) ** 0.5).item()


class KilnDDIMScheduler(_KilnScheduler, DDIMScheduler):
    pass


class KilnPNDMScheduler(_KilnScheduler, PNDMScheduler):
    pass


class KilnLCMScheduler(_KilnScheduler, LCMScheduler):
    pass


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
        raise SamplerError(f"Unknown sampler {name!r}. Valid samplers: {', '.join(SAMPLERS)}")
    return SAMPLERS[key]


def get_schedule_type(name: str | None) -> str:
    """The label of schedule type `name` (a label, A1111's internal name or an alias);
    None or "" mean "Automatic"."""
    if name is None or not str(name).strip():
        return "Automatic"
    label = _SCHEDULE_LOOKUP.get(_norm(name))
    if label is None:
        raise SamplerError(f"Unknown schedule type {name!r}. Valid schedule types: {', '.join(SCHEDULE_TYPES)}")
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
    raise SamplerError(f"Unknown sampler {name!r}. Valid samplers: {', '.join(SAMPLERS)}")


def resolve(sampler_name: str, schedule_type: str | None = "Automatic") -> tuple[Sampler, str]:
    """(sampler, schedule type label) for a request, checking that they go together. A
    legacy name ("DPM++ 2M Karras") brings its own schedule type, as in A1111."""
    try:
        sampler = get_sampler(sampler_name)
        legacy = None
    except SamplerError:
        name, legacy = split_legacy_name(sampler_name)
        sampler = SAMPLERS[name]
    label = get_schedule_type(schedule_type)
    if legacy and legacy != "Automatic":
        label = legacy  # as A1111's get_sampler_and_scheduler: the name's suffix wins
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


# --- For the API (/sdapi/v1/samplers, /sdapi/v1/schedulers) ----------------------------------

def sampler_list() -> list[dict]:
    """A1111's /sdapi/v1/samplers items."""
    items = []
    for s in SAMPLERS.values():
        options = {}
        if s.sigma_based and s.automatic != "Uniform":
            options["scheduler"] = SCHEDULE_TYPES[s.automatic].name
        if s.discard_penultimate:
            options["discard_next_to_last_sigma"] = True
        if s.second_order:
            options["second_order"] = True
        if s.brownian_noise:
            options["brownian_noise"] = True
        if s.ancestral:
            options["uses_ensd"] = True
        items.append({"name": s.name, "aliases": list(s.aliases), "options": options})
    return items


def scheduler_list() -> list[dict]:
    """A1111's /sdapi/v1/schedulers items."""
    return [{"name": st.name, "label": st.label, "aliases": list(st.aliases) or None,
             "default_rho": st.default_rho, "need_inner_model": st.name in ("uniform", "sgm_uniform", "simple",
                                                                            "normal", "ddim", "beta")}
            for st in SCHEDULE_TYPES.values()]
