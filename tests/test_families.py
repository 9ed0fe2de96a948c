"""Model families (modules/models/families/): the registry, detection, and what each
family's attributes do to the loaded model."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from modules.models import configs, families
from modules.models.detect import CheckpointError, detect, read_safetensors_header
from modules.models.families import SD1, ModelFamily, by_name, family_of
from modules.models.loader import _TEXT_CONFIGS, load_checkpoint


def _shapes(path):
    tensors, metadata = read_safetensors_header(path)
    return {k: t.shape for k, t in tensors.items()}, metadata


def _load(path, tmp_path, dtype=torch.float32):
    return load_checkpoint(path, name=path.name, short_hash="0", device=torch.device("cpu"), dtype=dtype,
                           cache_dir=tmp_path)


@pytest.mark.parametrize("family", families.FAMILIES, ids=lambda f: f.name)
def test_every_registered_family_has_what_the_engine_asks_for(family):
    assert isinstance(family, ModelFamily) and family.name and family.title and family.markers
    assert by_name(family.name) is family
    if not family.supported:
        assert family.refusal == f"{family.title} checkpoints are recognised but not supported yet"
        return
    assert isinstance(family.native_size, int) and family.native_size > 0
    assert isinstance(family.latent_scale, float) and 0 < family.latent_scale < 1
    assert family.text_encoders and all(enc.kind in _TEXT_CONFIGS and enc.prefix.endswith(".") and enc.pad
                                        for enc in family.text_encoders)
    assert family.preview_space is not None and len(family.preview_space.rgb) == 4  # 4 latent channels


def test_names_are_unique_and_unknown_names_are_a_clear_error():
    names = [f.name for f in families.FAMILIES]
    assert len(names) == len(set(names))
    with pytest.raises(KeyError, match="unknown model family 'sd9'"):
        by_name("sd9")


# name -> (title, heads, transformer layers, upcast attention, VAE scale, pads, hidden index at clip skip 1 and 2)
EXPECTED = {
    "tiny-sd1.safetensors": ("sd1", "SD 1.x", 8, 1, False, 0.18215, ["<|endoftext|>"], [(-1, True)], [(-2, True)]),
    "tiny-sd2-v.safetensors": ("sd2", "SD 2.x (v-prediction)", [1, 2], 1, True, 0.18215, ["!"], [(-2, True)],
                               [(-3, True)]),
    "tiny-sdxl.safetensors": ("sdxl", "SDXL", [1, 2], (1, 2), False, 0.13025, ["<|endoftext|>", "!"],
                              [(-2, False)] * 2, [(-3, False)] * 2),
    "inpaint/tiny-sd1-inpainting.safetensors": ("sd1", "SD 1.x inpainting", 8, 1, False, 0.18215, ["<|endoftext|>"],
                                                [(-1, True)], [(-2, True)]),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_tiny_checkpoints_are_detected_as_their_family_and_get_its_conventions(tiny_ckpt_dir, name):
    family_name, title, heads, layers, upcast, scale, pads, skip1, skip2 = EXPECTED[name]
    shapes, metadata = _shapes(tiny_ckpt_dir / name)
    info = detect(shapes, metadata)
    assert info.family is by_name(family_name) and info.title == title
    unet = configs.unet_config(shapes, info.family, 8)
    assert (unet["attention_head_dim"], unet["transformer_layers_per_block"], unet["upcast_attention"]) == \
        (heads, layers, upcast)
    assert info.family.latent_scale == scale
    assert [enc.pad for enc in info.family.text_encoders] == pads
    for clip_skip, expected in ((1, skip1), (2, skip2)):
        assert [(enc.hidden_index(clip_skip), enc.final_norm) for enc in info.family.text_encoders] == expected


def test_sd2_v_prediction_is_768_and_the_others_their_native_size():
    assert by_name("sd2").native_size_for("v_prediction") == (768, 768)
    assert by_name("sd2").native_size_for("epsilon") == (512, 512)
    assert by_name("sd1").native_size_for("v_prediction") == (512, 512)
    assert by_name("sdxl").native_size_for("epsilon") == (1024, 1024)


def test_loaded_sdxl_follows_its_family(tiny_ckpt_dir, tmp_path):
    """The SDXL VAE stays fp32 whatever the model's dtype; tokenizers pad as each encoder was trained."""
    model = _load(tiny_ckpt_dir / "tiny-sdxl.safetensors", tmp_path, dtype=torch.bfloat16)
    assert model.family is by_name("sdxl") and model.family.added_conditioning
    assert model.unet.dtype == torch.bfloat16 and model.vae.dtype == torch.float32
    assert [t.pad_token for t in model.tokenizers] == ["<|endoftext|>", "!"]
    assert model.vae.config.scaling_factor == 0.13025


def test_refiner_is_detected_from_its_single_open_clip():
    shapes = {"conditioner.embedders.0.model.ln_final.weight": (1280,),
              "model.diffusion_model.input_blocks.0.0.weight": (384, 4, 3, 3)}
    info = detect(shapes, {})
    assert info.family is by_name("sdxl_refiner") and info.native_size == (1024, 1024)
    assert info.family.vae_fp32 and info.family.added_conditioning and len(info.family.text_encoders) == 1


@pytest.mark.parametrize("key,family_name,title", [
    ("model.diffusion_model.joint_blocks.0.x.weight", "sd3", "Stable Diffusion 3"),
    ("model.diffusion_model.double_blocks.0.img_attn.qkv.weight", "flux", "Flux"),
    ("double_blocks.0.img_attn.qkv.weight", "flux", "Flux"),  # a bare Flux transformer file
])
def test_sd3_and_flux_are_recognised_and_refused(key, family_name, title):
    shapes = {key: (2,), "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)}
    assert family_of(shapes) is by_name(family_name)
    with pytest.raises(CheckpointError, match=f"^{title} checkpoints are recognised but not supported yet$"):
        detect(shapes, {})


def test_unknown_keys_are_not_a_checkpoint():
    with pytest.raises(CheckpointError, match="not a Stable Diffusion checkpoint"):
        family_of({"hello.weight": (3,)})


def test_a_family_is_compared_as_an_object_never_as_a_string():
    assert SD1() == by_name("sd1") and hash(SD1()) == hash(by_name("sd1"))
    assert by_name("sdxl") != by_name("sdxl_refiner")  # the refiner subclasses SDXL but is its own family
    with pytest.raises(TypeError, match="by .name"):
        by_name("sd1") == "sd1"  # noqa: B015 - a leftover string comparison fails loudly


class Toy(SD1):
    """A family defined outside the package, as one new file would: an SD1 variant
    trained at 256 px with its own VAE scale and an fp32 VAE, told apart by a key only
    its files carry."""
    name = "toy"
    title = "Toy"
    markers = ("kiln_toy.",)
    native_size = 256
    latent_scale = 0.5
    vae_fp32 = True


def test_a_new_family_is_one_subclass_and_one_line_in_the_registry(tiny_ckpt_dir, tmp_path, monkeypatch):
    state = load_file(str(tiny_ckpt_dir / "tiny-sd1.safetensors"))
    state["kiln_toy.version"] = torch.ones(1)
    path = tmp_path / "toy.safetensors"
    save_file(state, str(path))
    shapes, _ = _shapes(path)
    assert detect(shapes, {}).family is by_name("sd1")  # not registered: its SD1 marker wins

    toy = Toy()
    monkeypatch.setattr(families, "FAMILIES", [toy, *families.FAMILIES])  # the one line
    assert by_name("toy") is toy
    model = _load(path, tmp_path, dtype=torch.bfloat16)
    assert model.family is toy and model.info.title == "Toy" and model.info.native_size == (256, 256)
    assert model.vae.config.scaling_factor == 0.5
    assert model.unet.dtype == torch.bfloat16 and model.vae.dtype == torch.float32
    assert model.unet.config.attention_head_dim == 8  # SD1's conventions, inherited

    # the registry's order decides: listed after SD1, whose marker the file also has, it is never reached
    monkeypatch.setattr(families, "FAMILIES", [*families.FAMILIES[1:], toy])
    assert detect(shapes, {}).family is by_name("sd1")
