import hashlib
import json
import os
from pathlib import Path

import pytest

from modules.files import model_folders as paths
from modules.files.model_folders import (HashCache, ModelFile, ModelPathsError, add_ckpt_dir, add_comfyui_dir,
                           add_lora_dir, checkpoint_title, default_folders, list_models,
                           load_extra_model_paths)


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def names(folders, kind, **kw):
    return [m.name for m in list_models(folders, kind, **kw)]


def test_default_folders_find_both_layouts(tmp_path):
    touch(tmp_path / "models/Stable-diffusion/a1111.safetensors")
    touch(tmp_path / "models/Stable-diffusion/sd15/dreamshaper.safetensors")
    touch(tmp_path / "models/checkpoints/comfy.ckpt")
    touch(tmp_path / "models/VAE/vae-ft-mse.pt")
    touch(tmp_path / "models/Lora/style.safetensors")
    touch(tmp_path / "models/LyCORIS/loha.safetensors")
    touch(tmp_path / "models/loras/comfy_lora.safetensors")
    touch(tmp_path / "embeddings/easynegative.pt")
    touch(tmp_path / "models/embeddings/badhands.safetensors")
    touch(tmp_path / "models/ESRGAN/4x.pth")
    touch(tmp_path / "models/upscale_models/2x.pth")

    folders = default_folders(tmp_path)
    assert set(folders) >= {"checkpoints", "vae", "loras", "embeddings", "upscale_models"}
    assert all(isinstance(p, Path) for ps in folders.values() for p in ps)

    assert names(folders, "checkpoints") == ["a1111.safetensors", "comfy.ckpt", "sd15/dreamshaper.safetensors"]
    assert names(folders, "loras") == ["comfy_lora.safetensors", "loha.safetensors", "style.safetensors"]
    assert names(folders, "embeddings") == ["badhands.safetensors", "easynegative.pt"]
    assert names(folders, "upscale_models") == ["2x.pth", "4x.pth"]
    # models/VAE and models/vae are one folder on case-insensitive file systems: once either way
    assert names(folders, "vae") == ["vae-ft-mse.pt"]
    assert names(folders, "nonexistent_kind") == []


def test_list_models_rules(tmp_path):
    root = tmp_path / "ckpt"
    model = touch(root / "sd15/sub/deep.safetensors")
    touch(root / "UPPER.SAFETENSORS")
    touch(root / "notes.txt")
    touch(root / ".hidden.safetensors")
    touch(root / ".trash/old.safetensors")
    touch(root / "config.yaml")
    folders = {"checkpoints": []}
    add_ckpt_dir(folders, root)
    add_ckpt_dir(folders, root)  # the same folder twice is kept once
    folders["checkpoints"].append(root / "sd15")  # a nested folder reaches deep.safetensors again
    folders["checkpoints"].append(tmp_path / "missing")  # ignored

    found = list_models(folders, "checkpoints")
    assert [m.name for m in found] == ["sd15/sub/deep.safetensors", "UPPER.SAFETENSORS"]
    assert found[0] == ModelFile("sd15/sub/deep.safetensors", model)
    assert found[0].stem == "deep"
    assert names(folders, "checkpoints", suffixes=(".txt",)) == ["notes.txt"]


def test_symlinked_file_listed_once(tmp_path):
    real = touch(tmp_path / "loras/a.safetensors")
    try:
        os.symlink(real, tmp_path / "loras/link.safetensors")
    except (OSError, NotImplementedError):
        pytest.skip("no symlinks here")
    folders = add_lora_dir({}, tmp_path / "loras")
    assert names(folders, "loras") == ["a.safetensors"]


def test_extra_model_paths_yaml(tmp_path):
    webui = tmp_path / "webui"
    touch(webui / "models/Stable-diffusion/sd15/base.safetensors")
    touch(webui / "models/Lora/lora1.safetensors")
    touch(webui / "models/LyCORIS/lyco.safetensors")
    touch(webui / "models/ControlNet/canny.pth")
    touch(tmp_path / "conf/shared_vae/kl.safetensors")
    touch(tmp_path / "elsewhere/ckpts/other.ckpt")
    conf = tmp_path / "conf"
    yaml_file = conf / "extra_model_paths.yaml"
    yaml_file.write_text(
        "a111:\n"
        "    base_path: ../webui\n"
        "    checkpoints: models/Stable-diffusion\n"
        "    loras: |\n"
        "        models/Lora\n"
        "        models/LyCORIS\n"
        "    controlnet: models/ControlNet\n"
        "    is_default: true\n"
        "anything:\n"
        "    vae: shared_vae\n"
        f"    checkpoints: {tmp_path / 'elsewhere/ckpts'}\n"
        "empty_section:\n",
        encoding="utf-8")

    folders = load_extra_model_paths(default_folders(tmp_path / "data"), yaml_file)
    assert (webui / "models/Lora").resolve() in [p.resolve() for p in folders["loras"]]
    assert names(folders, "checkpoints") == ["other.ckpt", "sd15/base.safetensors"]
    assert names(folders, "loras") == ["lora1.safetensors", "lyco.safetensors"]
    assert names(folders, "vae") == ["kl.safetensors"]
    assert names(folders, "controlnet") == ["canny.pth"]  # unknown kinds are kept
    assert "is_default" not in folders and "base_path" not in folders


def test_extra_model_paths_home_and_aliases(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    touch(tmp_path / "comfy/models/clip/te.safetensors")
    yaml_file = tmp_path / "x.yaml"
    yaml_file.write_text("comfyui:\n  base_path: ~/comfy\n  clip: models/clip\n", encoding="utf-8")
    folders = load_extra_model_paths({}, yaml_file)
    assert names(folders, "text_encoders") == ["te.safetensors"]


@pytest.mark.parametrize("text", ["a111: [unclosed\n", "- just\n- a list\n", "a: {checkpoints: 3}\n", "a: 5\n"])
def test_bad_yaml_names_the_file(tmp_path, text):
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(text, encoding="utf-8")
    with pytest.raises(ModelPathsError, match="extra_model_paths.yaml"):
        load_extra_model_paths({}, yaml_file)


def test_missing_yaml_names_the_file(tmp_path):
    with pytest.raises(ModelPathsError, match="nope.yaml"):
        load_extra_model_paths({}, tmp_path / "nope.yaml")


def test_add_comfyui_dir(tmp_path):
    comfy = tmp_path / "ComfyUI"
    touch(comfy / "models/checkpoints/c.safetensors")
    touch(comfy / "models/unet/flux.safetensors")
    (comfy / "models/loras").mkdir(parents=True)
    folders = add_comfyui_dir(default_folders(tmp_path / "data"), comfy)
    assert names(folders, "checkpoints") == ["c.safetensors"]
    assert names(folders, "diffusion_models") == ["flux.safetensors"]
    assert comfy / "models/embeddings" in folders["embeddings"]
    with pytest.raises(ModelPathsError, match="not a ComfyUI folder"):
        add_comfyui_dir({}, tmp_path / "nothing")


def test_checkpoint_title():
    m = ModelFile("sd15/dreamshaper.safetensors", Path("/x/sd15/dreamshaper.safetensors"))
    assert checkpoint_title(m, "abcdef0123") == "sd15/dreamshaper.safetensors [abcdef0123]"
    assert checkpoint_title(m, None) == "sd15/dreamshaper.safetensors"
    assert checkpoint_title("a.ckpt", "0123456789") == "a.ckpt [0123456789]"


def test_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(HashCache, "CHUNK", 7)  # exercise the chunked read
    data = os.urandom(1000)
    model = touch(tmp_path / "m.safetensors", data)
    cache_file = tmp_path / "cache" / "cache.json"
    cache = HashCache(cache_file)
    expected = hashlib.sha256(data).hexdigest()

    assert cache.cached_sha256(model) is None
    assert cache.sha256(model) == expected
    assert cache.short_hash(model) == expected[:10]
    saved = json.loads(cache_file.read_text())
    assert saved["sha256"][str(model.resolve())]["sha256"] == expected

    # second call, and a new cache on the same file, do not read the model again
    reads = []
    real_open = open

    def counting_open(file, *args, **kwargs):
        if os.fspath(file) == os.path.abspath(model):
            reads.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    assert cache.sha256(model) == expected
    assert HashCache(cache_file).sha256(model) == expected
    assert reads == []

    # a changed file (new size and mtime) is hashed again
    st = os.stat(model)
    new_data = data + b"more"
    model.write_bytes(new_data)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert cache.sha256(model) == hashlib.sha256(new_data).hexdigest()
    assert len(reads) == 1

    # same size, new mtime: hashed again too
    newer = bytes(reversed(new_data))
    model.write_bytes(newer)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    assert HashCache(cache_file).sha256(model) == hashlib.sha256(newer).hexdigest()
    assert len(reads) == 2


def test_hash_cache_survives_a_corrupt_file(tmp_path):
    cache_file = touch(tmp_path / "cache.json", b"{not json")
    model = touch(tmp_path / "m.bin", b"abc")
    assert HashCache(cache_file).sha256(model) == hashlib.sha256(b"abc").hexdigest()
    assert json.loads(cache_file.read_text())["version"] == 1
    assert HashCache(None).short_hash(model) == hashlib.sha256(b"abc").hexdigest()[:10]


def test_paths_module_imports_no_ui():
    import ast
    tree = ast.parse(Path(paths.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in imported if m.split(".")[0] in ("gradio", "webui")}
