"""The one file that adapts diffusers' scheduler classes: a thin subclass of each that
runs A1111's sigmas (schedules.py), takes `generator=` in step() always, and, for the SDE
samplers, draws its noise from Brownian trees seeded per image as A1111 does."""
from __future__ import annotations

import functools
import inspect

import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, KDPM2AncestralDiscreteScheduler,
                       KDPM2DiscreteScheduler, LCMScheduler, LMSDiscreteScheduler, PNDMScheduler,
                       UniPCMultistepScheduler)
from diffusers.schedulers.scheduling_k_dpm_2_ancestral_discrete import KDPM2AncestralDiscreteSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

from modules.sampling.schedules import sigma_to_t


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
