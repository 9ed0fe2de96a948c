"""LoRA and textual inversion, A1111-style: `<lora:name:weight>` in the prompt, embeddings
by file name, `Lora hashes` / `TI hashes` in the infotext, /sdapi/v1/loras and
/sdapi/v1/embeddings.

LoRA and embedding files are written here in the formats other tools write (kohya
safetensors with hand-spelled layer names, A1111 .pt), for the tiny test checkpoints.
"""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from modules import cmd_args
from modules.text import conditioning
from modules import scripts
from modules.files import infotext
from modules.generation.request import GenerationRequest
from webui.api.wire import generation_info
from webui.server import create_app

SMALL = dict(width=64, height=64, steps=3, seed=11, save_images=False)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, tiny_ckpt_dir):
    from modules.device.devices import DeviceConfig
    from modules.runtime.runtime import Runtime, RuntimeConfig

    config = RuntimeConfig(data_dir=tmp_path_factory.mktemp("networks"), ckpt="tiny-sd1.safetensors",
                           device=DeviceConfig(torch.device("cpu"), torch.float32, "sdpa"), ckpt_dirs=[tiny_ckpt_dir])
    rt = Runtime(config)
    scripts.attach(rt)  # as the app composes it (create_app reaches the extensions' callbacks)
    yield rt
    rt.jobs.shutdown(wait=False)


def _lora_pair(out_features: int, in_features: int, rank: int, seed: int, kernel: int = 0):
    g = torch.Generator().manual_seed(seed)
    if kernel:  # LoCon: a k x k conv down to `rank` channels, then a 1x1 conv up
        down = torch.randn(rank, in_features, kernel, kernel, generator=g) * 0.5
        up = torch.randn(out_features, rank, 1, 1, generator=g) * 0.5
    else:
        down = torch.randn(rank, in_features, generator=g) * 0.5
        up = torch.randn(out_features, rank, generator=g) * 0.5
    return down, up


def write_lora(path, layers: dict[str, torch.nn.Module], rank=4, alpha=2.0, conv=False, seed=0, metadata=None):
    """A kohya LoRA file: for each `layers` name, lora_down/lora_up/alpha sized from the
    module it targets."""
    state = {}
    for i, (name, module) in enumerate(layers.items()):
        if isinstance(module, torch.nn.Conv2d):
            down, up = _lora_pair(module.out_channels, module.in_channels, rank, seed + i,
                                  kernel=module.kernel_size[0] if conv else 0)
            if not conv:
                down, up = down[:, :, None, None], up[:, :, None, None]
        else:
            down, up = _lora_pair(module.out_features, module.in_features, rank, seed + i)
        state[f"{name}.lora_down.weight"] = down.half().contiguous()
        state[f"{name}.lora_up.weight"] = up.half().contiguous()
        state[f"{name}.alpha"] = torch.tensor(alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata or {"ss_output_name": path.stem})
    return path


def snapshot(model) -> dict[str, torch.Tensor]:
    out = {}
    for prefix, module in [("unet", model.unet)] + [(f"te{i}", e) for i, e in enumerate(model.text_encoders)]:
        out.update({f"{prefix}.{k}": v.clone() for k, v in module.state_dict().items()})
    return out


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def addnet_hash(path) -> str:
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header:]).hexdigest()


def sd1_layers(model):
    unet, te = model.unet, model.text_encoders[0]
    block = unet.down_blocks[0].attentions[0]
    return {
        # diffusers-style names (kohya's SD1 trainer)
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": block.transformer_blocks[0].attn1.to_q,
        "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_v":
            unet.up_blocks[1].attentions[0].transformer_blocks[0].attn2.to_v,
        # LDM-style name: input_blocks.1.1 is the first level's first attention
        "lora_unet_input_blocks_1_1_proj_in": block.proj_in,
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": te.encoder.layers[0].self_attn.q_proj,
    }


def generate(runtime, prompt, **kw):
    return runtime.generate(GenerationRequest(prompt=prompt, **(SMALL | kw)))


def pixels(result) -> list[bytes]:
    return [im.tobytes() for im in result.images]


def token_vectors(model, words: str, encoder: int = 0) -> torch.Tensor:
    tokenizer = model.tokenizers[encoder]
    ids = tokenizer(words, add_special_tokens=False).input_ids
    enc = model.text_encoders[encoder]
    return getattr(enc, "text_model", enc).embeddings.token_embedding.weight[ids].detach().float().clone()


def sdxl_layers(model):
    unet, te1, te2 = model.unet, model.text_encoders[0], model.text_encoders[1]
    return {
        # input_blocks.3.1: the second level's attention (level 0 has resnet, downsampler)
        "lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_k":
            unet.down_blocks[1].attentions[0].transformer_blocks[1].attn2.to_k,
        "lora_unet_middle_block_1_proj_out": unet.mid_block.attentions[0].proj_out,
        "lora_te1_text_model_encoder_layers_1_mlp_fc1": te1.encoder.layers[1].mlp.fc1,
        "lora_te2_text_model_encoder_layers_0_self_attn_out_proj": te2.text_model.encoder.layers[0].self_attn.out_proj,
    }


@pytest.fixture(scope="module")
def files(runtime):
    """The LoRAs and embeddings more than one test uses, written once for the module:
    SD1 and SDXL LoRAs in A1111's folder, embeddings in both layouts' folders."""
    data = runtime.data_dir
    xl = runtime.checkpoints.load("tiny-sdxl.safetensors")
    out = {"xl": write_lora(data / "models" / "Lora" / "xl.safetensors", sdxl_layers(xl), seed=3,
                            metadata={"ss_output_name": "xl-style", "sshs_model_hash": "abcdef0123456789"})}
    comfy = data / "models" / "embeddings"  # ComfyUI's folder
    comfy.mkdir(parents=True, exist_ok=True)
    out["gstar"] = comfy / "gstar.safetensors"
    save_file({"clip_l": token_vectors(xl, "green star", 0), "clip_g": token_vectors(xl, "green star", 1)},
              str(out["gstar"]))
    sd1 = runtime.checkpoints.load("tiny-sd1.safetensors")
    out["shiny"] = write_lora(data / "models" / "Lora" / "style" / "shiny.safetensors", sd1_layers(sd1))
    folder = data / "embeddings"  # A1111's folder
    folder.mkdir(parents=True, exist_ok=True)
    # an A1111 .pt whose two vectors are those of "red square": writing its name must equal writing the words
    out["redsq"] = folder / "redsq.pt"
    torch.save({"string_to_param": {"*": token_vectors(sd1, "red square")}, "name": "redsq", "step": 500,
                "sd_checkpoint": "0123456789", "sd_checkpoint_name": "tiny"}, out["redsq"])
    out["bluebig"] = folder / "bluebig.safetensors"
    save_file({"emb_params": token_vectors(sd1, "blue circle big")}, str(out["bluebig"]))
    torch.save({"string_to_param": {"*": torch.randn(2, 768)}}, folder / "wide.pt")  # made for SD1.5's width
    return out


def test_lora_weight_zero_nonzero_and_exact_restore(runtime, files):
    model = runtime.checkpoints.load()
    path = files["shiny"]
    base_weights = snapshot(model)
    base = generate(runtime, "a red circle")
    assert base.warnings == []

    zero = generate(runtime, "a red circle <lora:shiny:0>")
    assert pixels(zero) == pixels(base)  # weight 0: the base model's picture, exactly

    applied = generate(runtime, "a red circle <lora:shiny:1>")
    assert pixels(applied) != pixels(base)
    params = infotext.parse_infotext(applied.infotexts[0])
    assert params["Lora hashes"] == f"shiny: {addnet_hash(path)[:12]}"
    assert params["Prompt"] == "a red circle <lora:shiny:1>"  # the infotext keeps the prompt as written
    assert infotext.request_fields_from_infotext(applied.infotexts[0])["prompt"] == "a red circle <lora:shiny:1>"
    # every named layer moved by up @ down * alp/rank; te weight and unet weight both 1
    module = sd1_layers(model)["lora_unet_input_blocks_1_1_proj_in"]
    assert not torch.equal(module.weight, base_weights["unet.down_blocks.0.attentions.0.proj_in.weight"])
    changed = [k for k in base_weights if not torch.equal(base_weights[k], snapshot(model)[k])]
    assert len(changed) == 4

    state = model.attachments.lora
    merges = state.merges
    again = generate(runtime, "a red circle <lora:shiny:1>")
    assert state.merges == merges  # the same set again: no work
    assert pixels(again) == pixels(applied)

    back = generate(runtime, "a red circle")
    assert same_weights(snapshot(model), base_weights)  # bit for bit
    assert pixels(back) == pixels(base)
    assert "Lora hashes" not in infotext.parse_infotext(back.infotexts[0])


def test_lora_text_encoder_and_unet_weights_apart(runtime):
    model = runtime.checkpoints.load()
    write_lora(runtime.data_dir / "models" / "loras" / "split.safetensors", sd1_layers(model), seed=5)  # ComfyUI folder
    base = snapshot(model)
    generate(runtime, "x <lora:split:0:1>")  # text encoder 0, UNet 1
    now = snapshot(model)
    assert torch.equal(now["te0.encoder.layers.0.self_attn.q_proj.weight"], base["te0.encoder.layers.0.self_attn.q_proj.weight"])
    assert not torch.equal(now["unet.down_blocks.0.attentions.0.proj_in.weight"], base["unet.down_blocks.0.attentions.0.proj_in.weight"])
    generate(runtime, "x <lora:split:te=1:unet=0>")
    now = snapshot(model)
    assert not torch.equal(now["te0.encoder.layers.0.self_attn.q_proj.weight"], base["te0.encoder.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(now["unet.down_blocks.0.attentions.0.proj_in.weight"], base["unet.down_blocks.0.attentions.0.proj_in.weight"])
    generate(runtime, "x")
    assert same_weights(snapshot(model), base)


def test_diffusers_and_peft_spellings_apply_like_kohya(runtime):
    from safetensors.torch import load_file
    model = runtime.checkpoints.load()
    folder = runtime.data_dir / "models" / "Lora"
    kohya = load_file(str(write_lora(folder / "k.safetensors", sd1_layers(model), seed=21)))
    names = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q":
             "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
             "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_v":
             "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v",
             "lora_unet_input_blocks_1_1_proj_in": "unet.down_blocks.0.attentions.0.proj_in",
             "lora_te_text_model_encoder_layers_0_self_attn_q_proj": "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"}
    parts = {"lora_down.weight": "lora_A.weight", "lora_up.weight": "lora_B.weight", "alpha": "alpha"}
    peft = {}
    for key, value in kohya.items():
        layer, _, part = key.partition(".")
        peft[f"{names[layer]}.{parts[part]}"] = value
    save_file(peft, str(folder / "p.safetensors"))
    generate(runtime, "x <lora:k:0.7>")
    with_kohya = snapshot(model)
    generate(runtime, "x <lora:p:0.7>")
    assert same_weights(snapshot(model), with_kohya)
    generate(runtime, "x")


def test_locon_conv_layer_gets_the_composed_kernel(runtime):
    model = runtime.checkpoints.load()
    conv = model.unet.down_blocks[0].resnets[0].conv1  # 3x3
    path = write_lora(runtime.data_dir / "models" / "Lora" / "locon.safetensors",
                      {"lora_unet_down_blocks_0_resnets_0_conv1": conv}, rank=3, alpha=1.5, conv=True, seed=9)
    before = conv.weight.detach().clone()
    result = generate(runtime, "x <lora:locon:0.5>")
    assert result.warnings == []
    from safetensors.torch import load_file
    sd = load_file(str(path))
    down = sd["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"].float()
    up = sd["lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight"].float()
    # a kxk conv into 3 channels then a 1x1 conv out is one kxk conv with this kernel
    kernel = torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
    assert torch.allclose(conv.weight, before + kernel * (1.5 / 3) * 0.5, atol=1e-5)
    generate(runtime, "x")
    assert torch.equal(conv.weight, before)


def test_missing_lora_and_unknown_network_are_warnings(runtime):
    base = generate(runtime, "a cat")
    result = generate(runtime, "a cat <lora:nowhere:1> <hypernet:old:1>")
    assert "LoRA not found: nowhere" in result.warnings
    assert any("hypernet" in w for w in result.warnings)
    assert generation_info(result)["warnings"] == result.warnings  # the API's info says so too
    assert pixels(result) == pixels(base)  # tags removed from the encoded text; nothing applied


def test_sdxl_lora_ldm_names_and_both_text_encoders(runtime, files):
    model = runtime.checkpoints.load("tiny-sdxl.safetensors")
    try:
        base = snapshot(model)
        base_img = generate(runtime, "a cat")
        result = generate(runtime, "a cat <lora:xl-style:0.8>")  # by alias
        assert result.warnings == []
        assert infotext.parse_infotext(result.infotexts[0])["Lora hashes"] == "xl-style: abcdef012345"
        assert pixels(result) != pixels(base_img)
        changed = {k for k in base if not torch.equal(base[k], snapshot(model)[k])}
        assert changed == {"unet.down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight",
                           "unet.mid_block.attentions.0.proj_out.weight", "te0.encoder.layers.1.mlp.fc1.weight",
                           "te1.text_model.encoder.layers.0.self_attn.out_proj.weight"}
        # an SD1 LoRA on SDXL: a warning, not a crash
        sd1 = generate(runtime, "a cat <lora:shiny:1>")
        assert any("shiny" in w and "do not exist" in w for w in sd1.warnings), sd1.warnings
        generate(runtime, "a cat")
        assert same_weights(snapshot(model), base)
    finally:
        runtime.checkpoints.load("tiny-sd1.safetensors")


# ---- textual inversion ------------------------------------------------------------------------
def refresh(runtime, model):
    from modules.models import embeddings
    return embeddings.refresh(model, runtime.networks.embedding_library, runtime.networks.embedding_files())


def test_embeddings_replace_their_name_with_their_vectors(runtime, files):
    model = runtime.checkpoints.load()
    folder = files["redsq"].parent
    refresh(runtime, model)

    def cond(text):
        return conditioning.encode(model, [text]).context

    assert torch.allclose(cond("a redsq on grass"), cond("a red square on grass"), atol=1e-5)
    assert torch.allclose(cond("bluebig, (redsq:1.2)"), cond("blue circle big, (red square:1.2)"), atol=1e-5)
    assert not torch.allclose(cond("a redsq"), cond("a redsquare"), atol=1e-3)
    # the three vectors count as three tokens when chunking: 73 words + 3 vectors > 75
    assert conditioning.chunk_count(model, " ".join(["cat"] * 73) + " bluebig") == 2
    assert conditioning.chunk_count(model, " ".join(["cat"] * 72) + " bluebig") == 1
    assert runtime.token_count("a redsq") == (3, 75)  # the prompt box counter counts the vectors too

    result = generate(runtime, "a redsq", negative_prompt="bluebig")
    ti = infotext.parse_infotext(result.infotexts[0])["TI hashes"]
    sums = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in folder.iterdir()}
    assert ti == f"redsq: {sums['redsq']}, bluebig: {sums['bluebig']}"
    assert pixels(result) == pixels(generate(runtime, "a red square", negative_prompt="blue circle big"))


def test_sdxl_embedding_with_clip_l_and_clip_g(runtime, files):
    model = runtime.checkpoints.load("tiny-sdxl.safetensors")
    try:
        refresh(runtime, model)
        a = conditioning.encode(model, ["a gstar"])
        b = conditioning.encode(model, ["a green star"])
        assert torch.allclose(a.context, b.context, atol=1e-5) and torch.allclose(a.pooled, b.pooled, atol=1e-5)
        from modules.models import embeddings
        assert "redsq" in embeddings.registry(model).scan.skipped  # an SD1-width file on SDXL
    finally:
        runtime.checkpoints.load("tiny-sd1.safetensors")


# ---- API ------------------------------------------------------------------------------------
def test_api_lists_and_generation_info(runtime, files):
    client = TestClient(create_app(runtime, cmd_args.parse(["--api"])))
    loras = {item["name"]: item for item in client.get("/sdapi/v1/loras").json()}
    assert {"shiny", "xl"} <= set(loras)
    assert set(loras["xl"]) == {"name", "alias", "path", "metadata"}
    assert loras["xl"]["alias"] == "xl-style" and loras["xl"]["metadata"]["sshs_model_hash"] == "abcdef0123456789"
    assert loras["shiny"]["path"].endswith("models/Lora/style/shiny.safetensors")
    assert client.post("/sdapi/v1/refresh-loras").status_code == 200

    runtime.checkpoints.load("tiny-sd1.safetensors")
    emb = client.get("/sdapi/v1/embeddings").json()
    assert emb["loaded"]["redsq"] == {"step": 500, "sd_checkpoint": "0123456789", "sd_checkpoint_name": "tiny",
                                      "shape": 64, "vectors": 2}
    assert emb["loaded"]["bluebig"]["vectors"] == 3
    assert emb["skipped"]["wide"]["shape"] == 768 and "needs 64" in emb["skipped"]["wide"]["message"]
    # an SDXL file's clip_l half is made for the same CLIP-L that SD1 uses
    assert emb["loaded"]["gstar"]["vectors"] == 2

    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat <lora:shiny:0.7> <lora:gone:1>", "width": 64,
                                                 "height": 64, "steps": 2})
    assert r.status_code == 200
    info = json.loads(r.json()["info"])
    assert info["warnings"] == ["LoRA not found: gone"]
    assert "Lora hashes: \"shiny: " in info["infotexts"][0]
