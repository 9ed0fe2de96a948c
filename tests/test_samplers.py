"""Samplers: names, schedules, and A1111 parity.

A1111 runs k-diffusion's `sampling.py`; the parity tests run that file itself (installed
with `pip install --no-deps k-diffusion==0.1.1.post1`; only sampling.py and external.py are
loaded, by path, because the package's __init__ imports torchvision and friends) on the
same toy denoiser, noise and seeds as our diffusers schedulers driven by generation/loop.py's
loop, and compare the results. Without k-diffusion those tests skip; the schedule values
below were taken from it, so the schedule tests run regardless.
"""
from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.sampling import samplers as S
from modules.sampling import schedules
from webui.api import wire

SHAPE = (1, 4, 8, 8)
CFG = 3.0


# --- k-diffusion, loaded without its package __init__ -----------------------------------------

def _load_k_diffusion():
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    pkg_name = "_kdiffusion_reference"
    if pkg_name in sys.modules:
        return sys.modules[pkg_name]
    pkg = types.ModuleType(pkg_name)
    pkg.__path__ = []
    utils = types.ModuleType(pkg_name + ".utils")
    utils.append_dims = lambda x, n: x.reshape(*x.shape, *([1] * (n - x.ndim)))
    stubs = {pkg_name: pkg, pkg_name + ".utils": utils}
    if importlib.util.find_spec("torchdiffeq") is None:  # only its log_likelihood uses it
        stubs["torchdiffeq"] = types.SimpleNamespace(odeint=None)
    sys.modules.update(stubs)
    try:
        for name in ("sampling", "external"):
            mspec = importlib.util.spec_from_file_location(f"{pkg_name}.{name}", root / f"{name}.py")
            module = importlib.util.module_from_spec(mspec)
            sys.modules[mspec.name] = module
            mspec.loader.exec_module(module)
            setattr(pkg, name, module)
    finally:
        if "torchdiffeq" in stubs:
            del sys.modules["torchdiffeq"]
    return pkg


KD = _load_k_diffusion()
needs_kd = pytest.mark.skipif(KD is None, reason="k-diffusion not installed: pip install --no-deps "
                                                  "k-diffusion==0.1.1.post1")


def ldm_alphas_cumprod() -> torch.Tensor:
    """As latent-diffusion's make_beta_schedule + register_schedule compute it."""
    betas = (torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2).numpy()
    return torch.tensor(np.cumprod(1.0 - betas, axis=0), dtype=torch.float32)


# --- the toy UNet and the two loops --------------------------------------------------------------

def toy_eps(x: torch.Tensor, t, cond: torch.Tensor) -> torch.Tensor:
    """A smooth, nonlinear, timestep-dependent stand-in for the UNet (so a wrong input
    scale or timestep shows)."""
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, 1, 1, 1)
    return 0.1 * cond.reshape(-1, 1, 1, 1) * x + 0.05 * torch.sin(t / 37.0 + x)


def conds(n):
    return torch.tensor([1.0] * n + [0.6] * n)


def make_noise(seeds, shape=SHAPE):
    """As seeds.make_noise: one generator per image, which goes on to drive the sampler."""
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    return torch.stack([torch.randn(shape[1:], generator=g) for g in gens]), gens


def run_ours(sampler, schedule, steps, seeds, eps_fn=toy_eps, shape=SHAPE, **kwargs):
    """loop.sample's loop, with a counter of UNet evaluations."""
    sch = S.create_scheduler(sampler, schedule, steps, **kwargs)
    noise, gens = make_noise(seeds, shape)
    n = noise.shape[0]
    latents = noise * sch.init_noise_sigma
    calls = 0
    for t in sch.timesteps:
        x = sch.scale_model_input(torch.cat([latents, latents]), t)
        out = eps_fn(x, t, conds(n))
        calls += 1
        pos, neg = out.chunk(2)
        latents = sch.step(neg + CFG * (pos - neg), t, latents, generator=gens).prev_sample
    return latents, calls, noise


def run_kd(func_name, sigmas, seeds, brownian=False, v_prediction=False, **kwargs):
    """The same run as A1111 does it: k-diffusion's sampler on CompVisDenoiser + CFG."""
    inner = types.SimpleNamespace(alphas_cumprod=ldm_alphas_cumprod(),
                                  apply_model=lambda x, t, cond: toy_eps(x, t, cond))
    wrap = (KD.external.CompVisVDenoiser if v_prediction else KD.external.CompVisDenoiser)(inner)

    def cfg_model(x, sigma):
        den = wrap(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=conds(x.shape[0]))
        pos, neg = den.chunk(2)
        return neg + CFG * (pos - neg)

    noise, gens = make_noise(seeds)
    x = noise * sigmas[0]
    if brownian:
        positive = sigmas[sigmas > 0]
        kwargs["noise_sampler"] = KD.sampling.BrownianTreeNoiseSampler(x, positive.min(), positive.max(),
                                                                       seed=list(seeds))
    elif func_name in ("sample_euler_ancestral", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral"):
        kwargs["noise_sampler"] = lambda s, s_next: torch.cat(
            [torch.randn((1,) + SHAPE[1:], generator=g) for g in gens])
    return getattr(KD.sampling, func_name)(cfg_model, x, sigmas, disable=True, **kwargs), wrap


SD = 0.5  # the data: N(0, SD**2) per latent value, whose ideal denoiser is known in closed form


def gaussian_eps(x, t, cond):
    """The exact eps-prediction for N(0, SD**2) data (cond ignored)."""
    sigma = schedules.t_to_sigma(torch.as_tensor(t, dtype=torch.float32).reshape(-1), schedules.training_sigmas().log())
    sigma = sigma.reshape(-1, 1, 1, 1)
    return x * (sigma ** 2 + 1) ** 0.5 * sigma / (SD ** 2 + sigma ** 2)


# --- names -----------------------------------------------------------------------------------------

def test_names_and_aliases():
    assert S.sampler_names()[:2] == ["DPM++ 2M", "DPM++ SDE"]
    assert "Euler a" in S.sampler_names() and "LCM" in S.sampler_names()
    assert S.get_sampler("k_euler_a").name == "Euler a"
    assert S.get_sampler("euler_ancestral").name == "Euler a"
    assert S.get_sampler("  dpm++ 2m  ").name == "DPM++ 2M"
    assert S.get_sampler("K_DPMPP_2M").name == "DPM++ 2M"
    assert S.get_sampler("dpmpp_2m_sde").name == "DPM++ 2M SDE"
    assert S.get_sampler("plms").name == "PLMS"
    assert S.get_schedule_type("karras") == "Karras"
    assert S.get_schedule_type("sgm_uniform") == "SGM Uniform"
    assert S.get_schedule_type(None) == "Automatic"


@pytest.mark.parametrize("name,expected", [
    ("DPM++ 2M Karras", ("DPM++ 2M", "Karras")),
    ("Euler a", ("Euler a", "Automatic")),
    ("euler", ("Euler", "Automatic")),
    ("DPM++ SDE Karras", ("DPM++ SDE", "Karras")),
    ("DPM++ 2M SDE Karras", ("DPM++ 2M SDE", "Karras")),
    ("DPM++ 2M SDE Heun Exponential", ("DPM++ 2M SDE Heun", "Exponential")),
    ("DPM++ 2M SDE", ("DPM++ 2M SDE", "Automatic")),
    ("DPM2 a Karras", ("DPM2 a", "Karras")),
    ("LMS Karras", ("LMS", "Karras")),
    ("dpm++ 3m sde sgm uniform", ("DPM++ 3M SDE", "SGM Uniform")),
    ("k_dpmpp_2m_ka", ("DPM++ 2M", "Karras")),
    ("k_dpm_2_a_ka", ("DPM2 a", "Karras")),
])
def test_split_legacy_name(name, expected):
    assert S.split_legacy_name(name) == expected


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(S.SamplerError) as e:
        S.create_scheduler("Eulerz", "Automatic", 4)
    assert "Eulerz" in str(e.value) and "Euler a" in str(e.value) and "DPM++ 2M" in str(e.value)
    with pytest.raises(S.SamplerError, match="Karras, Exponential"):
        S.create_scheduler("Euler", "Kerras", 4)
    with pytest.raises(S.SamplerError, match="Valid samplers"):
        S.split_legacy_name("DPM++ 9M Karras")
    with pytest.raises(S.SamplerError, match="Valid schedule types for it: Automatic, SGM Uniform"):
        S.validate("DDIM", "Karras")
    with pytest.raises(S.SamplerError):
        S.create_scheduler("Euler", "Automatic", 0)
    assert isinstance(S.SamplerError("x"), ValueError)


def test_legacy_name_in_a_request_selects_its_schedule():
    assert S.effective_schedule_type("DPM++ 2M Karras", "Automatic") == "Karras"
    assert S.effective_schedule_type("DPM++ 2M Karras", "Exponential") == "Karras"  # A1111: the name wins
    assert S.effective_schedule_type("DPM++ 2M", "Automatic") == "Karras"   # A1111 1.10's default for it
    assert S.effective_schedule_type("Euler a", "Automatic") == "Uniform"
    assert S.effective_schedule_type("DPM++ 3M SDE", None) == "Exponential"
    assert torch.equal(S.sigmas_for("DPM++ 2M Karras", "Automatic", 9), S.sigmas_for("DPM++ 2M", "Karras", 9))


def test_schedule_type_lists():
    assert S.schedule_types()[0] == "Automatic"
    assert {"Karras", "Exponential", "SGM Uniform", "Beta"} <= set(S.schedule_types())
    assert S.schedule_types_for("Euler") == S.schedule_types()
    assert S.schedule_types_for("DDIM") == ["Automatic", "SGM Uniform"]
    assert S.schedule_types_for("LCM") == ["Automatic"]
    api = {s["name"]: s for s in wire.sampler_list()}  # the API's shape of the table
    assert api["DPM++ 2M"]["options"]["scheduler"] == "karras"
    assert api["DPM2"]["options"]["discard_next_to_last_sigma"] is True
    assert "k_euler_a" in api["Euler a"]["aliases"]
    assert [s["label"] for s in wire.scheduler_list()] == S.schedule_types()


# --- sigma schedules -------------------------------------------------------------------------------

def test_training_sigmas_are_ldms():
    sig = schedules.training_sigmas()
    ref = ((1 - ldm_alphas_cumprod()) / ldm_alphas_cumprod()) ** 0.5
    assert sig.dtype == torch.float32 and sig.shape == (1000,)
    assert torch.allclose(sig, ref, rtol=1e-6, atol=0)
    assert sig[0].item() == pytest.approx(0.0291675, rel=1e-5)
    assert sig[-1].item() == pytest.approx(14.614642, rel=1e-6)


# Values printed by k-diffusion 0.1.1.post1 (CompVisDenoiser.get_sigmas, get_sigmas_karras /
# _exponential with the model's sigma_min and sigma_max), rounded to 6 significant digits.
KD_SCHEDULES = {
    ("Euler", "Automatic", 5): [14.6146, 4.08608, 1.61558, 0.69515, 0.0291675, 0.0],
    ("Euler", "Karras", 5): [14.6146, 4.79654, 1.2741, 0.247952, 0.0291675, 0.0],
    ("Euler", "Exponential", 5): [14.6146, 3.08899, 0.652896, 0.137998, 0.0291675, 0.0],
    ("DPM2", "Karras", 4): [14.6146, 4.79654, 1.2741, 0.247952, 0.0],
    ("DPM++ 3M SDE", "Automatic", 4): [14.6146, 3.08899, 0.652896, 0.137998, 0.0],
}


@pytest.mark.parametrize("key", list(KD_SCHEDULES))
def test_schedules_match_recorded_k_diffusion_values(key):
    got = S.sigmas_for(*key)
    assert got.tolist() == pytest.approx(KD_SCHEDULES[key], rel=1e-5, abs=1e-7)


@needs_kd
@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 33, 150])
def test_sigma_schedules_equal_k_diffusions(n):
    wrap = KD.external.CompVisDenoiser(types.SimpleNamespace(alphas_cumprod=ldm_alphas_cumprod()))
    smin, smax = wrap.sigmas[0].item(), wrap.sigmas[-1].item()
    sampling = KD.sampling
    expected = {
        "Automatic": wrap.get_sigmas(n),  # Euler's Automatic = Uniform
        "Uniform": wrap.get_sigmas(n),
        "Karras": sampling.get_sigmas_karras(n, smin, smax),
        "Exponential": sampling.get_sigmas_exponential(n, smin, smax),
        "Polyexponential": sampling.get_sigmas_polyexponential(n, smin, smax),
        # A1111's sgm_uniform: n + 1 timesteps from t(sigma_max) to t(sigma_min), last dropped
        "SGM Uniform": sampling.append_zero(wrap.t_to_sigma(torch.linspace(
            wrap.sigma_to_t(torch.tensor(smax)), wrap.sigma_to_t(torch.tensor(smin)), n + 1)[:-1])),
    }
    for label, ref in expected.items():
        got = S.sigmas_for("Euler", label, n)
        assert got.dtype == torch.float32 and got.shape == ref.shape, label
        assert torch.allclose(got, ref.float(), rtol=2e-6, atol=0), (label, (got - ref).abs().max())
    # DPM2 / DPM2 a / DPM++ 3M SDE: steps + 1 sigmas with the next-to-last dropped (A1111)
    full = sampling.get_sigmas_karras(n + 1, smin, smax)
    assert torch.allclose(S.sigmas_for("DPM2", "Karras", n), torch.cat([full[:-2], full[-1:]]), rtol=2e-6, atol=0)
    # timesteps the UNet sees = k-diffusion's sigma_to_t
    sig = S.sigmas_for("Euler", "Karras", n)
    assert torch.allclose(schedules.sigma_to_t(sig[:-1], schedules.training_sigmas().log()), wrap.sigma_to_t(sig[:-1]),
                          rtol=0, atol=2e-3)


def test_other_schedules_are_sane():
    train = schedules.training_sigmas()
    for label in S.SIGMA_SCHEDULES:
        for n in (1, 4, 20):
            sig = S.sigmas_for("Euler", label, n)
            assert sig[-1] == 0 and torch.all(sig[:-1] > 0), label
            assert torch.all(sig[1:] < sig[:-1]), label
            assert sig[0] <= train[-1] * (1 + 1e-6), label
            if label != "DDIM":
                assert len(sig) == n + 1, label
    # Simple: every (1000 / n)-th training sigma; DDIM: training sigmas 1, 1 + 1000 // n, ...
    assert S.sigmas_for("Euler", "Simple", 4)[:-1].tolist() == train[[999, 749, 499, 249]].tolist()
    assert S.sigmas_for("Euler", "DDIM", 4)[:-1].tolist() == train[[751, 501, 251, 1]].tolist()
    # Beta(0.6, 0.6) quantiles between sigma_min and sigma_max: symmetric about the middle
    beta = S.sigmas_for("Euler", "Beta", 5)[:-1]
    lo, hi = train[0].item(), train[-1].item()
    assert beta[2].item() == pytest.approx((lo + hi) / 2, rel=1e-5)
    assert (beta[1] + beta[3]).item() == pytest.approx(lo + hi, rel=1e-5)


def test_img2img_runs_the_tail_of_the_schedule():
    full = S.sigmas_for("Euler", "Karras", 20)
    # A1111: t_enc = int(0.5 * 20) = 10, sigma_sched = sigmas[20 - 10 - 1:] -> 11 steps
    half = S.sigmas_for("Euler", "Karras", 20, denoise=0.5)
    assert torch.equal(half, full[9:]) and len(half) == 12
    assert torch.equal(S.sigmas_for("Euler", "Karras", 20, denoise=1.0), full)
    assert len(S.sigmas_for("Euler", "Karras", 20, denoise=0.01)) == 2
    sch = S.create_scheduler("Heun", "Karras", 20, denoise=0.5)
    assert len(sch.timesteps) == 2 * 11 - 1
    assert sch.sigmas[0].item() == pytest.approx(full[9].item())
    init = torch.full(SHAPE, 0.5)
    noise = torch.ones(SHAPE)
    assert torch.allclose(S.noise_latents(sch, init, noise), init + full[9] * noise)
    for name in ("DDIM", "PLMS", "LCM", "DPM++ 2M", "UniPC"):
        sch = S.create_scheduler(name, "Automatic", 20, denoise=0.3)
        lat = S.noise_latents(sch, init, noise)
        assert torch.isfinite(lat).all(), name
        assert len(sch.timesteps.unique()) == int(0.3 * 20) + 1, name


# --- every sampler runs generation/loop.py's loop ------------------------------------------------------

ALL_PAIRS = [(s, st) for s in S.sampler_names() for st in S.schedule_types_for(s)]


def evaluations(name, schedule, steps):
    sampler = S.get_sampler(name)
    if not sampler.sigma_based:
        return steps + 1 if name == "PLMS" and steps > 1 else steps  # PLMS: a Heun-like first step
    n = len(S.sigmas_for(name, schedule, steps)) - 1
    return 2 * n - 1 if sampler.second_order else n


@pytest.mark.parametrize("name,schedule", ALL_PAIRS)
def test_every_sampler_and_schedule_runs_the_loop(name, schedule):
    out, calls, noise = run_ours(name, schedule, 6, seeds=[1, 2], eps_fn=gaussian_eps)
    assert out.shape == (2,) + SHAPE[1:]
    assert torch.isfinite(out).all()
    assert calls == evaluations(name, schedule, 6)
    # noise at sigma ~14.6 became something of the data's scale (SD), even in 6 steps
    assert 0.1 * SD < out.std().item() < 3 * SD
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("name", S.sampler_names())
def test_image_i_of_a_batch_equals_a_single_run_of_seed_plus_i(name):
    batch, _, _ = run_ours(name, "Automatic", 5, seeds=[100, 101, 102])
    single, _, _ = run_ours(name, "Automatic", 5, seeds=[102])
    assert torch.allclose(batch[2], single[0], rtol=1e-5, atol=1e-6)
    other, _, _ = run_ours(name, "Automatic", 5, seeds=[103])
    assert not torch.allclose(other[0], single[0], atol=1e-3)


@pytest.mark.parametrize("name", ["Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 3M SDE",
                                  "LCM"])
def test_stochastic_samplers_draw_their_noise_from_the_generators(name):
    def run(sampler_seed):
        sch = S.create_scheduler(name, "Automatic", 4)
        noise, _ = make_noise([7])
        gens = [torch.Generator().manual_seed(sampler_seed)]
        latents = noise * sch.init_noise_sigma
        for t in sch.timesteps:
            eps = toy_eps(sch.scale_model_input(latents, t), t, torch.ones(1))
            latents = sch.step(eps, t, latents, generator=gens).prev_sample
        return latents

    assert torch.equal(run(7), run(7))
    assert (run(7) - run(8)).abs().max() > 1e-3   # same start, other sampler noise


@pytest.mark.parametrize("name", ["Euler", "Heun", "LMS", "DPM2", "DPM++ 2M", "DDIM", "PLMS", "UniPC"])
def test_deterministic_samplers_accept_and_ignore_generators(name):
    def run(generator):
        sch = S.create_scheduler(name, "Automatic", 4)
        latents = torch.ones(SHAPE) * sch.init_noise_sigma
        for t in sch.timesteps:
            eps = toy_eps(sch.scale_model_input(latents, t), t, torch.ones(1))
            latents = sch.step(eps, t, latents, generator=generator).prev_sample
        return latents

    assert torch.equal(run([torch.Generator().manual_seed(1)]), run(None))


# --- denoising a Gaussian: every sampler lands on the right distribution -------------------------

FIRST_ORDER = {"Euler", "DDIM"}


@pytest.mark.parametrize("name", ["Euler", "LMS", "Heun", "DPM2", "DPM++ 2M", "UniPC", "DDIM", "PLMS"])
def test_deterministic_samplers_solve_the_flow_ode(name):
    # The probability-flow ODE maps x at sigma0 to x * SD / sqrt(SD**2 + sigma0**2).
    steps = 30
    sch = S.create_scheduler(name, "Automatic", steps)
    sigma0 = S.sigmas_for(name, "Automatic", steps)[0]
    out, _, noise = run_ours(name, "Automatic", steps, seeds=[3], eps_fn=gaussian_eps)
    start = noise * sch.init_noise_sigma
    if S.get_sampler(name).sigma_based and name not in ("DPM++ 2M", "UniPC"):
        start_ve = start                           # k-diffusion's scale: x = noise * sigma0
    else:
        start_ve = start * (1 + sigma0 ** 2) ** 0.5  # variance-preserving scale
    exact = start_ve * SD / (SD ** 2 + sigma0 ** 2) ** 0.5
    err = ((out - exact).abs().max() / exact.abs().max()).item()
    assert err < (0.1 if name in FIRST_ORDER else 0.015), err


@pytest.mark.parametrize("name", ["Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE",
                                  "DPM++ 2M SDE Heun", "DPM++ 3M SDE"])
def test_stochastic_samplers_sample_the_data_distribution(name):
    out, _, noise = run_ours(name, "Automatic", 50, seeds=[5], eps_fn=gaussian_eps, shape=(1, 4, 32, 32))
    assert out.std().item() == pytest.approx(SD, rel=0.12 if name == "Euler a" else 0.04)
    assert abs(out.mean().item()) < 0.05
    # fresh noise all the way down: the result is nearly independent of the starting noise
    corr = torch.corrcoef(torch.stack([out.flatten(), noise.flatten()]))[0, 1].item()
    assert abs(corr) < 0.2


# --- A1111 parity: k-diffusion's samplers on the same denoiser, noise and seeds -----------------

PARITY = {
    "Euler": ("sample_euler", {}),
    "Heun": ("sample_heun", {}),
    "LMS": ("sample_lms", {}),
    "DPM2": ("sample_dpm_2", {}),
    "DPM++ 2M": ("sample_dpmpp_2m", {}),
    "Euler a": ("sample_euler_ancestral", {}),
    "DPM2 a": ("sample_dpm_2_ancestral", {}),
    "DPM++ 2S a": ("sample_dpmpp_2s_ancestral", {}),
    "DPM++ SDE": ("sample_dpmpp_sde", {"brownian": True}),
    "DPM++ 2M SDE": ("sample_dpmpp_2m_sde", {"brownian": True}),
    "DPM++ 2M SDE Heun": ("sample_dpmpp_2m_sde", {"brownian": True, "solver_type": "heun"}),
    "DPM++ 3M SDE": ("sample_dpmpp_3m_sde", {"brownian": True}),
}


@needs_kd
@pytest.mark.parametrize("schedule", ["Automatic", "Karras", "Exponential"])
@pytest.mark.parametrize("name", list(PARITY))
def test_matches_k_diffusion(name, schedule):
    func, kwargs = PARITY[name]
    steps = 7
    seeds = [11, 12]
    sigmas = S.sigmas_for(name, schedule, steps)
    ref, wrap = run_kd(func, sigmas, seeds, **kwargs)
    ours, _, _ = run_ours(name, schedule, steps, seeds)
    scale = ref.abs().max().item()
    assert scale > 0.1
    err = (ours - ref).abs().max().item()
    assert err < 2e-5 * max(scale, 1.0), f"{name} / {schedule}: max error {err:.3g}"


@needs_kd
@pytest.mark.parametrize("name", list(PARITY))
def test_v_prediction_matches_k_diffusion(name):
    func, kwargs = PARITY[name]
    sigmas = S.sigmas_for(name, "Karras", 6)
    ref, _ = run_kd(func, sigmas, [21, 22], v_prediction=True, **kwargs)
    ours, _, _ = run_ours(name, "Karras", 6, [21, 22], prediction_type="v_prediction")
    err = (ours - ref).abs().max().item()
    assert err < 2e-5 * max(ref.abs().max().item(), 1.0), f"{name}: max error {err:.3g}"


@pytest.mark.parametrize("name", S.sampler_names())
@pytest.mark.parametrize("steps", [1, 2])
def test_one_and_two_steps(name, steps):
    out, calls, _ = run_ours(name, "Automatic", steps, [4], eps_fn=gaussian_eps)
    assert torch.isfinite(out).all() and calls == evaluations(name, "Automatic", steps)
    assert out.abs().max() < 5 * schedules.training_sigmas()[-1]


@needs_kd
def test_parity_catches_a_wrong_schedule():
    # the comparison is sharp enough to see Karras vs k-diffusion's own Automatic
    ref, _ = run_kd("sample_euler", S.sigmas_for("Euler", "Automatic", 7), [1])
    ours, _, _ = run_ours("Euler", "Karras", 7, [1])
    assert (ours - ref).abs().max() > 1e-3


@needs_kd
def test_img2img_tail_matches_k_diffusion():
    sigmas = S.sigmas_for("DPM++ 2M", "Karras", 20, denoise=0.4)
    init = torch.linspace(-1, 1, math.prod(SHAPE)).reshape(SHAPE)
    noise, _ = make_noise([9])
    inner = types.SimpleNamespace(alphas_cumprod=ldm_alphas_cumprod(),
                                  apply_model=lambda x, t, cond: toy_eps(x, t, cond))
    wrap = KD.external.CompVisDenoiser(inner)
    ref = KD.sampling.sample_dpmpp_2m(lambda x, s: wrap(x, s, cond=torch.ones(1)), init + noise * sigmas[0],
                                      sigmas, disable=True)
    sch = S.create_scheduler("DPM++ 2M", "Karras", 20, denoise=0.4)
    latents = S.noise_latents(sch, init, noise)
    for t in sch.timesteps:
        eps = toy_eps(sch.scale_model_input(latents, t), t, torch.ones(1))
        latents = sch.step(eps, t, latents).prev_sample
    assert (latents - ref).abs().max() < 2e-5
