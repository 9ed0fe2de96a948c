"""Stable Diffusion's training noise schedule and A1111's schedule types: the training
sigmas, conversions between sigma and timestep, and each schedule type's n steps ->
n + 1 sigmas ending in 0, computed as A1111 (k-diffusion) does."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


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
