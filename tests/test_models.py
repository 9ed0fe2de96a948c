"""Checkpoint detection, config inference from shapes, and loading."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from modules.models import configs
from modules.models.detect import CheckpointError, detect, read_safetensors_header
from modules.models.loader import load_checkpoint
from tests.synthetic import build_modules, to_ldm_state


def _load(path, tmp_path, **kw):
    return load_checkpoint(path, name=path.name, short_hash="0123456789", device=torch.device("cpu"),
                           dtype=torch.float32, cache_dir=tmp_path, **kw)


def _header_shapes(path):
    tensors, metadata = read_safetensors_header(path)
    return {k: t.shape for k, t in tensors.items()}, metadata


@pytest.mark.parametrize("name,family,inpainting,prediction", [
    ("tiny-sd1.safetensors", "sd1", False, "epsilon"),
    ("tiny-sd2-v.safetensors", "sd2", False, "v_prediction"),
    ("tiny-sdxl.safetensors", "sdxl", False, "epsilon"),
    ("inpaint/tiny-sd1-inpainting.safetensors", "sd1", True, "epsilon"),
])
def test_family_from_header_alone(tiny_ckpt_dir, name, family, inpainting, prediction):
    shapes, metadata = _header_shapes(tiny_ckpt_dir / name)
    info = detect(shapes, metadata, tiny_ckpt_dir / name)
    assert (info.family.name, info.inpainting, info.prediction_type) == (family, inpainting, prediction)


@pytest.mark.parametrize("key,message", [
    ("model.diffusion_model.joint_blocks.0.x.weight", "Stable Diffusion 3"),
    ("double_blocks.0.img_attn.qkv.weight", "Flux"),
])
def test_sd3_and_flux_are_refused_by_name(tmp_path, key, message):
    path = tmp_path / "other.safetensors"
    save_file({key: torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match=f"{message}.*not supported yet"):
        _load(path, tmp_path)


def test_sdxl_refiner_detected():
    shapes = {"conditioner.embedders.0.model.ln_final.weight": (1280,),
              "model.diffusion_model.input_blocks.0.0.weight": (384, 4, 3, 3)}
    assert detect(shapes, {}).family.name == "sdxl_refiner"


def test_v_prediction_from_yaml_and_key(tiny_ckpt_dir, tmp_path):
    shapes, _ = _header_shapes(tiny_ckpt_dir / "tiny-sd1.safetensors")
    assert detect(dict(shapes, v_pred=()), {}).prediction_type == "v_prediction"
    fake = tmp_path / "m.safetensors"
    fake.with_suffix(".yaml").write_text("model:\n  params:\n    parameterization: \"v\"\n")
    assert detect(shapes, {}, fake).prediction_type == "v_prediction"
    assert detect(shapes, {}, tmp_path / "none.safetensors", default_prediction="v_prediction").prediction_type == "v_prediction"


@pytest.mark.parametrize("family,unet,vae,texts", [
    ("sd1", 859_520_964, 83_653_863, [123_060_480]),
    ("sdxl", 2_567_463_684, 83_653_863, [123_060_480, 694_659_840]),
])
def test_full_size_configs_from_shapes_have_published_parameter_counts(family, unet, vae, texts):
    """Build the published architecture on the meta device, write its key layout, infer
    the configs back from the shapes alone, and count parameters."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    u, v, t = build_modules(family, "full", meta=True)
    shapes = {k: tuple(x.shape) for k, x in to_ldm_state(family, u, v, t).items()}
    info = detect(shapes, {})
    assert info.family.name == family
    with torch.device("meta"):
        u2 = UNet2DConditionModel(**configs.unet_config(shapes, info.family, 64))
        v2 = AutoencoderKL(**configs.vae_config(shapes, 0.18215, 512))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(u2), count(v2), [count(x) for x in t]) == (unet, vae, texts)


@pytest.mark.parametrize("name", ["tiny-sd1.safetensors", "tiny-sd2-v.safetensors", "tiny-sdxl.safetensors"])
def test_weights_equal_diffusers_own_single_file_conversion(tiny_ckpt_dir, tmp_path, name):
    """Parity with diffusers' from_single_file (given a local config, so it stays offline)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    path = tiny_ckpt_dir / name
    model = _load(path, tmp_path)
    for ours, cls, sub in ((model.unet, UNet2DConditionModel, "unet"), (model.vae, AutoencoderKL, "vae")):
        folder = tmp_path / sub
        ours.save_config(folder)
        theirs = cls.from_single_file(str(path), config=str(folder), local_files_only=True, torch_dtype=torch.float32)
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k].reshape(a[k].shape), rtol=0, atol=0, msg=k)


def test_text_encoder_weights_match_file(tiny_ckpt_dir, tmp_path):
    path = tiny_ckpt_dir / "tiny-sd1.safetensors"
    model = _load(path, tmp_path)
    raw = load_file(str(path))
    emb = raw["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"].float()
    assert torch.equal(model.text_encoders[0].get_input_embeddings().weight, emb)
    assert len(model.tokenizers[0]) == 49408


def test_truncated_and_garbage_files_give_clear_errors(tiny_ckpt_dir, tmp_path):
    good = (tiny_ckpt_dir / "tiny-sd1.safetensors").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        _load(truncated, tmp_path)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="corrupt"):
        _load(garbage, tmp_path)
    unknown = tmp_path / "unknown.safetensors"
    save_file({"hello.weight": torch.zeros(3)}, str(unknown))
    with pytest.raises(CheckpointError, match="not a Stable Diffusion checkpoint"):
        _load(unknown, tmp_path)


def test_ckpt_loads_with_weights_only_and_refuses_code(tiny_ckpt_dir, tmp_path):
    state = load_file(str(tiny_ckpt_dir / "tiny-sd1.safetensors"))
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": state, "global_step": 5}, ckpt)
    assert _load(ckpt, tmp_path).family.name == "sd1"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": state, "x": Evil()}, evil)
    with pytest.raises(CheckpointError, match="cannot load .ckpt safely"):
        _load(evil, tmp_path)


def test_runtime_keeps_previous_model_when_a_load_fails(make_runtime, tiny_ckpt_dir):
    runtime = make_runtime()
    runtime.checkpoints.load()
    assert runtime.model.name == "tiny-sd1.safetensors"
    bad = tiny_ckpt_dir / "zz-broken.safetensors"
    bad.write_bytes(struct.pack("<Q", 10**6) + json.dumps({}).encode())
    try:
        with pytest.raises(CheckpointError):
            runtime.checkpoints.load("zz-broken.safetensors")
        assert runtime.model.name == "tiny-sd1.safetensors"
        with pytest.raises(CheckpointError, match="not found"):
            runtime.checkpoints.load("does-not-exist")
    finally:
        bad.unlink()


def test_checkpoint_titles_carry_the_sha256_prefix(make_runtime, tiny_ckpt_dir):
    import hashlib

    runtime = make_runtime()
    model = runtime.checkpoints.load()
    digest = hashlib.sha256((tiny_ckpt_dir / "tiny-sd1.safetensors").read_bytes()).hexdigest()
    assert model.title == f"tiny-sd1.safetensors [{digest[:10]}]"
    names = [f.name for f in runtime.checkpoints.list()]
    assert "inpaint/tiny-sd1-inpainting.safetensors" in names
    assert runtime.checkpoints.resolve(digest[:10]).name == "tiny-sd1.safetensors"
