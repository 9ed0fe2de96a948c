"""The extension manager: discovery, load order, enabled state, install.py, installing
from a git repository or a folder, the Extensions tab and /sdapi/v1/extensions."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modules import cmd_args
from modules.extensions import git as extension_git, install as extension_install, discovery as extensions
from modules.extensions.install import InstallError, InstallStamps


# ---- helpers ----------------------------------------------------------------------------------
def make_ext(root: Path, name: str, metadata: str = "", files: dict[str, str] | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    if metadata:
        (folder / "metadata.ini").write_text(textwrap.dedent(metadata))
    for rel, text in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(textwrap.dedent(text))
    return folder


def git(*args, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=Kiln Test", "-c", "user.email=test@kiln", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def git_repo(folder: Path, files: dict[str, str]) -> Path:
    """A git repository with one commit holding `files`."""
    folder.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=folder)
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    git("add", "-A", cwd=folder)
    git("commit", "-qm", "first", cwd=folder)
    return folder


def names(exts) -> list[str]:
    return [e.name for e in exts]


# ---- discovery and load order ------------------------------------------------------------------
def test_every_subfolder_is_an_extension_and_metadata_orders_them(tmp_path):
    root = tmp_path / "extensions"
    make_ext(root, "alpha", "[Extension]\nName = Alpha Tools  ; what others call it\nAfter = charlie\n")
    make_ext(root, "bravo", "[Extension]\nBefore = alpha tools, zulu-not-installed\n")
    make_ext(root, "charlie")
    make_ext(root, "delta", "[Extension]\nRequires = Alpha Tools, charlie\n")
    make_ext(root, ".hidden")
    (root / "notes.txt").write_text("not an extension")
    found = extensions.discover([root])
    assert names(found) == ["alpha", "bravo", "charlie", "delta"]
    assert found[0].title == "Alpha Tools" and found[0].canonical_name == "alpha tools"
    ordered, problems = extensions.load_order(found)
    # bravo before alpha (Before), alpha after charlie (After), delta after both it Requires
    assert names(ordered) == ["bravo", "charlie", "alpha", "delta"]
    assert problems == []  # a Before naming an absent extension is no problem


def test_missing_requirement_and_cycle_are_reported_not_fatal(tmp_path):
    root = tmp_path / "extensions"
    make_ext(root, "needs", "[Extension]\nRequires = ghost, off\n")
    make_ext(root, "off")
    make_ext(root, "x", "[Extension]\nAfter = y\n")
    make_ext(root, "y", "[Extension]\nAfter = x\n")
    make_ext(root, "a-first")
    installed = extensions.discover([root], disabled={"off"})
    ordered, problems = extensions.load_order(extensions.active(installed), installed)
    assert names(ordered) == ["a-first", "needs", "x", "y"]  # everything still loads; the cycle by name
    messages = {(p.extension, p.message) for p in problems}
    assert ("needs", "needs requires ghost, which is not installed") in messages
    assert ("needs", "needs requires off, which is disabled") in messages
    assert {p.extension for p in problems if "cycle" in p.message} == {"x", "y"}

    errors = extensions.ErrorLog()
    data = tmp_path / "data"
    (data / "extensions").mkdir(parents=True)
    _, loaded = extensions.load(tmp_path / "repo", tmp_path, ["off"], "none", errors)
    assert names(loaded) == ["a-first", "needs", "x", "y"]
    assert [e.where for e in errors.for_extension("needs")] == ["metadata.ini", "metadata.ini"]
    extensions.load(tmp_path / "repo", tmp_path, ["off"], "none", errors)  # found again: reported once
    assert len(errors.for_extension("needs")) == 2


def test_script_sections_order_scripts_across_extensions(tmp_path):
    root = tmp_path / "extensions"
    make_ext(root, "aaa", "[scripts/late.py]\nAfter = zzz/main.py\n",
             {"scripts/early.py": "", "scripts/late.py": ""})
    make_ext(root, "zzz", "[scripts/main.py]\nBefore = aaa/early.py\nRequires = nothing-here\n",
             {"scripts/main.py": ""})
    order, problems = extensions.script_order(extensions.discover([root]))
    assert [f"{e.name}/{p.name}" for e, p in order] == ["zzz/main.py", "aaa/early.py", "aaa/late.py"]
    assert [p.message for p in problems] == ["scripts/main.py requires nothing-here, which is not loaded"]


def test_builtin_is_what_the_repo_tracks_and_disable_all(tmp_path):
    repo = tmp_path / "repo"
    git_repo(repo, {"extensions/shipped/scripts/a.py": "", "README.md": "x"})
    make_ext(repo / "extensions", "mine")  # installed by the user into the repo's folder: not tracked
    data = tmp_path / "data"
    make_ext(data / "extensions", "elsewhere")
    found = extensions.installed(repo, data)
    assert [(e.name, e.builtin) for e in found] == [("mine", False), ("shipped", True), ("elsewhere", False)]
    assert names(extensions.active(found, "extra")) == ["shipped"]
    assert extensions.active(found, "all") == []
    assert names(extensions.active(found, "none")) == ["mine", "shipped", "elsewhere"]


# ---- enabled state -------------------------------------------------------------------------------
def test_disabled_state_is_saved_in_config_json_and_respected_after_restart(make_runtime):
    probe = make_runtime()
    root = probe.data_dir / "extensions"
    for name in ("one", "two", "three"):
        make_ext(root, name)
    probe.options.disabled_extensions = ["two"]
    probe.settings.save()

    rt = make_runtime()
    assert {e.name: e.enabled for e in rt.extensions.loaded if e.name in ("one", "two", "three")} == \
        {"one": True, "two": False, "three": True}
    assert "two" not in names(rt.extensions.active) and {"one", "three"} <= set(names(rt.extensions.active))

    rt.extensions.apply({"two": True, "three": False})
    saved = json.loads(rt.settings.path.read_text())
    assert saved["disabled_extensions"] == ["three"] and saved["disable_all_extensions"] == "none"
    assert "three" in names(rt.extensions.active)  # the running one is unchanged until the restart
    assert {e.name: e.enabled for e in rt.extensions.installed()}["three"] is False

    again = make_runtime()
    assert {"one", "two"} <= set(names(again.extensions.active)) and "three" not in names(again.extensions.active)

    again.extensions.apply({}, disable_all="all")
    assert make_runtime().extensions.active == []
    with pytest.raises(InstallError, match="no extension named 'ghost'"):
        again.extensions.apply({"ghost": True})
    with pytest.raises(InstallError, match="must be one of none, extra, all"):
        again.extensions.apply({}, disable_all="some")


# ---- install.py -------------------------------------------------------------------------------------
INSTALL_PY = """\
import os, pathlib
log = pathlib.Path(os.environ["KILN_TEST_LOG"])
log.write_text(log.read_text() + pathlib.Path.cwd().name + "\\n" if log.exists() else pathlib.Path.cwd().name + "\\n")
print("setting up", pathlib.Path.cwd().name)
"""


def test_install_py_runs_once_for_a_new_extension_again_after_a_change_and_a_failure_does_not_stop_start_up(
        tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    root = data / "extensions"
    make_ext(root, "good", files={"install.py": INSTALL_PY})
    make_ext(root, "broken", files={"install.py": "print('about to fail')\nraise SystemExit('no compiler here')\n"})
    make_ext(root, "off", files={"install.py": INSTALL_PY})
    make_ext(root, "plain")  # no install.py
    (data / "config.json").write_text(json.dumps({"disabled_extensions": ["off"]}))
    ran = tmp_path / "ran.txt"
    monkeypatch.setenv("KILN_TEST_LOG", str(ran))

    import launch

    monkeypatch.setattr(launch, "PYTHON", Path(sys.executable))  # the venv's python
    args = cmd_args.parse(["--data-dir", str(data)])
    launch.run_extension_installers(args)
    out = capsys.readouterr().out
    assert ran.read_text() == "good\n"  # run in the extension's folder; the disabled one not at all
    assert "[good] setting up good" in out and "extension good: install.py done" in out
    assert "[broken] about to fail" in out and "[broken] no compiler here" in out
    assert "extension broken: install.py FAILED (exit 1)" in out

    launch.run_extension_installers(args)  # unchanged: good does not run again, broken tries again
    assert ran.read_text() == "good\n"
    assert "extension broken: install.py FAILED" in capsys.readouterr().out

    (root / "good" / "requirements.txt").write_text("something==1\n")  # the extension changed
    launch.run_extension_installers(args)
    assert ran.read_text() == "good\ngood\n"

    # the failure is in the Extensions tab's error log, with the extension's name and output
    from modules.device.devices import DeviceConfig
    from modules.runtime.runtime import Runtime, RuntimeConfig

    import torch

    rt = Runtime(RuntimeConfig(data_dir=data, device=DeviceConfig(torch.device("cpu"), torch.float32, "sdpa")))
    [error] = rt.extensions.errors.for_extension("broken")
    assert error.where == "install.py" and "no compiler here" in error.message
    assert rt.extensions.errors.for_extension("good") == []
    assert {"good", "broken", "plain"} <= set(names(rt.extensions.active))  # a failed install.py still loads


def test_install_py_stamp_follows_the_git_head(tmp_path):
    repo = git_repo(tmp_path / "ext", {"install.py": "print('hi')\n"})
    ext = extensions.Extension("ext", repo)
    stamps = InstallStamps.load(tmp_path)
    assert extension_install.run_installer(ext, sys.executable, stamps).ran
    assert not extension_install.run_installer(ext, sys.executable, InstallStamps.load(tmp_path)).ran
    (repo / "other.py").write_text("x = 1\n")
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "second", cwd=repo)
    again = extension_install.run_installer(ext, sys.executable, InstallStamps.load(tmp_path))
    assert again.ran and again.ok and again.output.strip() == "hi"


# ---- installing ---------------------------------------------------------------------------------------
def test_install_from_a_local_git_repository_shows_its_version_and_finds_updates(make_runtime, tmp_path):
    upstream = git_repo(tmp_path / "src" / "sd-webui-fancy.git", {
        "scripts/fancy.py": "", "install.py": "print('fancy set up')\n"})
    head = git("rev-parse", "HEAD", cwd=upstream)
    rt = make_runtime()
    result = rt.extensions.install(str(upstream))
    assert result.name == "sd-webui-fancy" and result.install_ok and "fancy set up" in result.install_output
    assert "cloned from" in result.message and "install.py ran" in result.message
    folder = rt.data_dir / "extensions" / "sd-webui-fancy"
    assert (folder / "scripts" / "fancy.py").is_file()
    assert git("rev-list", "--count", "HEAD", cwd=folder) == "1"  # a shallow clone

    v = extension_git.version(folder)
    assert v.commit_hash == head and v.short == head[:8] and v.branch == "main"
    assert v.remote == upstream.resolve().as_uri() and isinstance(v.commit_date, int)
    listed = {e.name: e for e in rt.extensions.installed()}
    assert listed["sd-webui-fancy"].enabled and not listed["sd-webui-fancy"].builtin
    assert rt.extensions.restart_pending

    assert [(c.name, c.behind, c.message) for c in rt.extensions.check_updates()] == \
        [("sd-webui-fancy", 0, "up to date")]
    (upstream / "scripts" / "more.py").write_text("")
    git("add", "-A", cwd=upstream)
    git("commit", "-qm", "second", cwd=upstream)
    [check] = rt.extensions.check_updates()
    assert check.has_update and check.message == "1 new commit on origin/main"
    messages = rt.extensions.apply({}, update=["sd-webui-fancy"])
    new_head = git("rev-parse", "HEAD", cwd=upstream)
    # the new commit means install.py runs again
    assert messages == [f"sd-webui-fancy: updated to {new_head[:8]}", "sd-webui-fancy: install.py ran."]
    assert (folder / "scripts" / "more.py").is_file()

    with pytest.raises(InstallError, match="already exists"):
        rt.extensions.install(str(upstream))
    second = rt.extensions.install(str(upstream), name="fancy-copy")
    assert second.path.name == "fancy-copy"


def test_install_from_a_folder_copies_it_and_bad_sources_give_messages(tmp_path):
    dest = tmp_path / "extensions"
    src = make_ext(tmp_path / "work", "my-ext", files={"javascript/a.js": "console.log(1)"})
    result = extension_install.install(str(src), dest)
    assert (dest / "my-ext" / "javascript" / "a.js").read_text() == "console.log(1)"
    assert "copied from" in result.message
    assert extension_git.version(dest / "my-ext").commit_hash is None

    cases = [
        ("", "", "Give the extension's git URL"),
        ("not a url", "", "neither a git URL"),
        ("relative/folder", "", "neither a git URL"),
        (str(src), "my-ext", "already exists"),
        (str(src), "../escape", "cannot be a folder name"),
        (str(src / "javascript" / "a.js"), "", "is a file"),
        ((tmp_path / "nowhere").as_uri(), "", "git clone .* failed"),
        ("https://127.0.0.1:9/nobody/ext.git", "", "git clone .* failed"),  # no network: refused at once
    ]
    for source, name, message in cases:
        with pytest.raises(InstallError, match=message):
            extension_install.install(source, dest, name)
    assert sorted(p.name for p in dest.iterdir()) == ["my-ext"]  # nothing half-installed left behind


def test_check_for_updates_without_network_is_a_message(tmp_path):
    repo = git_repo(tmp_path / "upstream", {"a.txt": "a"})
    clone = tmp_path / "clone"
    extension_git.clone(str(repo), clone)
    git("remote", "set-url", "origin", "https://127.0.0.1:9/nobody/ext.git", cwd=clone)
    check = extension_git.check_for_update("clone", clone)
    assert not check.has_update and check.message.startswith("could not fetch origin/main:")
    plain = make_ext(tmp_path, "plain")
    assert extension_git.check_for_update("plain", plain).message == "not a git checkout: cannot check for updates"


def test_installing_is_refused_when_the_server_listens_beyond_localhost(make_runtime, tmp_path):
    src = make_ext(tmp_path / "work", "ext")
    for argv, allowed in ((["--listen"], False), (["--server-name", "0.0.0.0"], False),
                          (["--server-name", "192.168.1.5"], False), (["--server-name", "localhost"], True),
                          ([], True), (["--listen", "--enable-insecure-extension-access"], True)):
        assert cmd_args.extension_access(cmd_args.parse(argv)) is allowed, argv
    with pytest.raises(InstallError, match="--enable-insecure-extension-access"):
        extension_install.install(str(src), tmp_path / "extensions", allowed=False)
    assert not (tmp_path / "extensions" / "ext").exists()

    rt = make_runtime(extension_access=False)
    for call in (lambda: rt.extensions.install(str(src)), rt.extensions.check_updates,
                 lambda: rt.extensions.apply({"ext": False})):
        with pytest.raises(InstallError, match="listens beyond this computer"):
            call()
    assert not (rt.data_dir / "extensions" / "ext").exists()


def test_the_settings_api_obeys_the_same_rule_when_access_is_off(make_runtime, tmp_path):
    """The probe enabled and disabled extensions through POST /sdapi/v1/options under
    --listen, where the page refuses it. Now it is a 422 with the same message, config.json
    is unchanged, and other settings still change."""
    from fastapi.testclient import TestClient

    from webui.server import create_app

    rt = make_runtime(extension_access=False)
    with TestClient(create_app(rt, cmd_args.parse(["--api", "--listen"]))) as client:
        for body in ({"disabled_extensions": ["xyz-grid"]}, {"disable_all_extensions": "extra"}):
            r = client.post("/sdapi/v1/options", json=body)
            assert r.status_code == 422 and "--enable-insecure-extension-access" in r.json()["detail"]
        assert rt.options.disabled_extensions == [] and rt.options.disable_all_extensions == "none"
        assert client.post("/sdapi/v1/options", json={"samples_save": False}).status_code == 200
    assert json.loads((rt.data_dir / "config.json").read_text())["disable_all_extensions"] == "none"


def test_the_tab_refuses_with_the_message_when_access_is_off(make_runtime, tmp_path):
    import gradio as gr

    from webui.ui import extensions as tab

    src = make_ext(tmp_path / "work", "ext")
    rt = make_runtime(extension_access=False)
    with pytest.raises(gr.Error, match="--enable-insecure-extension-access"):
        tab.install(rt, str(src), "", "")
    with pytest.raises(gr.Error, match="listens beyond this computer"):
        tab.apply(rt, {"headers": tab.HEADERS, "data": []}, "none")
    with pytest.raises(gr.Error, match="listens beyond this computer"):
        tab.check(rt)
    assert not (rt.data_dir / "extensions" / "ext").exists()


def test_api_options_take_the_extension_settings_and_refuse_bad_values(make_runtime):
    from fastapi.testclient import TestClient

    from webui.server import create_app

    rt = make_runtime()
    with TestClient(create_app(rt, cmd_args.parse(["--nowebui"]))) as client:
        for body, field in (({"disabled_extensions": "one"}, "disabled_extensions"),
                            ({"disabled_extensions": [1]}, "disabled_extensions"),
                            ({"disable_all_extensions": "most"}, "disable_all_extensions")):
            r = client.post("/sdapi/v1/options", json=body)
            assert r.status_code == 422 and r.json()["field"] == field, r.text
        assert client.post("/sdapi/v1/options", json={"disabled_extensions": ["one"],
                                                      "disable_all_extensions": "extra"}).status_code == 200
        options = client.get("/sdapi/v1/options").json()
    assert options["disabled_extensions"] == ["one"] and options["disable_all_extensions"] == "extra"
    assert json.loads(rt.settings.path.read_text())["disabled_extensions"] == ["one"]


# ---- the running server: page, tab, API, restart ------------------------------------------------
SHOWN_JS = """onUiLoaded(() => { document.body.dataset.kilnExample = "loaded:" + gradioApp().querySelectorAll("#txt2img_prompt").length; });
"""


@pytest.fixture(scope="module")
def ext_server(tiny_ckpt_dir, tmp_path_factory):
    """A server (UI and API) whose data dir has: `shown` (enabled, js + css), `hidden`
    (disabled, js), `versioned` (a git checkout) and `broken` (its install.py failed)."""
    import os
    import time
    import urllib.request

    from tests.conftest import ROOT, free_port

    data = tmp_path_factory.mktemp("ext-data")
    work = tmp_path_factory.mktemp("ext-work")
    root = data / "extensions"
    make_ext(root, "shown", "[Extension]\nName = Shown Example\n",
             {"javascript/shown.js": SHOWN_JS, "style.css": "#txt2img_prompt { outline: 3px solid rgb(1, 2, 3); }\n"})
    make_ext(root, "hidden", files={"javascript/hidden.js": "document.body.dataset.kilnHidden = 'ran';\n"})
    upstream = git_repo(work / "versioned", {"scripts/nothing.txt": "x"})
    extension_git.clone(str(upstream), root / "versioned")
    broken = make_ext(root, "broken", files={"install.py": "raise SystemExit('cannot build wheels')\n"})
    assert not extension_install.run_installer(extensions.Extension("broken", broken), sys.executable,
                                               InstallStamps.load(data)).ok
    (data / "config.json").write_text(json.dumps({"disabled_extensions": ["hidden"]}))

    port = free_port()
    log = open(data / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "webui.server", "--port", str(port), "--data-dir", str(data),
                             "--ckpt-dir", str(tiny_ckpt_dir), "--ckpt", "tiny-sd1.safetensors", "--api"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1"))
    url = f"http://127.0.0.1:{port}/"

    def wait_up(timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                return urllib.request.urlopen(url, timeout=2).read().decode()
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("server exited: " + (data / "server.log").read_text())
                time.sleep(0.5)
        pytest.fail("server did not answer: " + (data / "server.log").read_text())

    wait_up()
    yield {"url": url, "data": data, "work": work, "upstream": upstream, "wait_up": wait_up, "proc": proc}
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def page_assets(html: str) -> list[str]:
    import re

    return re.findall(r'(?:src|href)=\\"(gradio_api/file=[^"\\]+)', html)


def test_enabled_extensions_js_and_css_are_in_the_page_and_a_disabled_ones_are_not(ext_server):
    import urllib.request

    html = urllib.request.urlopen(ext_server["url"], timeout=10).read().decode()
    assets = page_assets(html)
    assert any(a.split("?")[0].endswith("/shown/javascript/shown.js") for a in assets), assets
    assert any(a.split("?")[0].endswith("/shown/style.css") for a in assets), assets
    assert not any("hidden" in a for a in assets) and "hidden.js" not in html
    served = {a.split("?")[0].rsplit("/", 1)[-1]: urllib.request.urlopen(ext_server["url"] + a, timeout=10).read().decode()
              for a in assets}
    assert served["shown.js"] == SHOWN_JS and "rgb(1, 2, 3)" in served["style.css"]
    assert "onUiLoaded" in served["extension-hooks.js"]


def test_extensions_tab_lists_installed_extensions_with_versions_and_errors(ext_server):
    from gradio_client import Client

    client = Client(ext_server["url"], verbose=False)
    table, errors = client.predict(api_name="/extensions_list")
    rows = {r[2].split(" (")[0]: dict(zip(table["headers"], r)) for r in table["data"]}
    assert {"shown", "hidden", "versioned", "broken"} <= set(rows)
    assert rows["shown"]["Extension"] == "shown (Shown Example)" and rows["shown"]["Status"] == "loaded"
    assert rows["shown"]["Enabled"] is True and rows["hidden"]["Enabled"] is False
    assert rows["hidden"]["Status"] == "disabled" and rows["shown"]["Built in"] == ""
    head = git("rev-parse", "HEAD", cwd=ext_server["upstream"])
    assert rows["versioned"]["Version"] == f"{head[:8]} (main)" and rows["versioned"]["Remote"].startswith("file://")
    assert rows["versioned"]["Date"][:2] == "20"
    assert "1 error: install.py" in rows["broken"]["Status"]
    assert "cannot build wheels" in errors

    table, message = client.predict(api_name="/extensions_check")
    rows = {r[2]: dict(zip(table["headers"], r)) for r in table["data"]}
    assert rows["versioned"]["Status"] == "loaded; up to date" and message == "No updates found."


def test_sdapi_extensions_has_a1111s_shape(ext_server):
    import urllib.request

    items = json.loads(urllib.request.urlopen(ext_server["url"] + "sdapi/v1/extensions", timeout=10).read())
    by_name = {i["name"]: i for i in items}
    assert all(set(i) == {"name", "remote", "branch", "commit_hash", "version", "commit_date", "enabled"} for i in items)
    head = git("rev-parse", "HEAD", cwd=ext_server["upstream"])
    v = by_name["versioned"]
    assert (v["commit_hash"], v["version"], v["branch"], v["enabled"]) == (head, head[:8], "main", True)
    assert v["remote"] == ext_server["upstream"].resolve().as_uri() and isinstance(v["commit_date"], int)
    assert by_name["hidden"]["enabled"] is False and by_name["hidden"]["commit_hash"] is None


def test_extension_javascript_runs_in_the_browser(ext_server):
    from tests.test_browser import find_chromium

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = find_chromium()
    if not chromium:
        pytest.skip("no Chromium here and it could not be installed: browser check skipped")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(ext_server["url"])
        page.wait_for_function("document.body.dataset.kilnExample !== undefined", timeout=60000)
        assert page.evaluate("document.body.dataset.kilnExample") == "loaded:1"
        assert page.evaluate("document.body.dataset.kilnHidden") is None  # the disabled one never ran
        outline = page.evaluate("getComputedStyle(document.getElementById('txt2img_prompt')).outlineColor")
        page.get_by_role("tab", name="Extensions").click()
        page.wait_for_selector("#extensions_table", timeout=10000)
        browser.close()
    assert outline == "rgb(1, 2, 3)"


def test_install_from_the_tab_then_apply_and_restart_reloads_with_the_new_set(ext_server):
    import time

    from gradio_client import Client

    url, data = ext_server["url"], ext_server["data"]
    late = make_ext(ext_server["work"], "late", files={"javascript/late.js": "window.kilnLate = 1;\n"})
    client = Client(url, verbose=False)
    message, output, table = client.predict(str(late), "", "", api_name="/extensions_install")
    assert message.startswith("Installed late into") and (data / "extensions" / "late" / "javascript").is_dir()
    rows = {r[2].split(" (")[0]: r for r in table["data"]}
    assert rows["late"][7] == "loads after restart"
    with pytest.raises(Exception, match="already exists"):
        client.predict(str(late), "", "", api_name="/extensions_install")

    for row in table["data"]:  # untick shown, tick hidden
        name = row[2].split(" (")[0]
        row[0] = {"shown": False, "hidden": True}.get(name, row[0])
    pid = ext_server["proc"].pid
    status = client.predict(table, "none", api_name="/extensions_apply")
    assert status.startswith("Restarting Kiln")
    assert json.loads((data / "config.json").read_text())["disabled_extensions"] == ["shown"]

    deadline = time.time() + 180
    while True:  # the old process answers until it re-executes itself, then the new one
        assets = " ".join(page_assets(ext_server["wait_up"]()))
        if "late.js" in assets or time.time() > deadline:
            break
        time.sleep(1)
    assert ext_server["proc"].pid == pid and ext_server["proc"].poll() is None  # the same process, re-executed
    assert "/hidden/javascript/hidden.js" in assets and "/late/javascript/late.js" in assets
    assert "/shown/" not in assets


# ---- the guide's example extension ----------------------------------------------------------------
def test_the_example_extension_from_the_guide_installs_loads_and_works(make_runtime):
    """docs/example-extension, copied into an extensions folder (here by "Install from URL"
    with its path), loads: its always-on script frames the images and writes the infotext
    field, its tab and its page files are there."""
    import numpy as np
    import gradio as gr

    from modules.generation.request import GenerationRequest, ScriptSelection
    from tests.conftest import ROOT
    from webui.ui import app as ui_app
    from webui.ui import extensions as tab

    example = ROOT / "docs" / "example-extension"
    assert "example-extension" not in names(make_runtime().extensions.installed())  # not loaded by default
    data = make_runtime().data_dir
    result = extension_install.install(str(example), data / "extensions", "kiln-example", python=sys.executable,
                                       stamps=InstallStamps.load(data))
    assert result.install_ok and "nothing else to install" in result.install_output

    rt = make_runtime()
    try:
        assert "kiln-example" in names(rt.extensions.active)
        assert rt.extensions.errors.for_extension("kiln-example") == []
        small = dict(prompt="a red circle", seed=3, width=64, height=64, steps=3, sampler_name="Euler")
        plain = rt.generate(GenerationRequest(**small))
        framed = rt.generate(GenerationRequest(**small,
                                               scripts=ScriptSelection(alwayson={"Example frame": {"args": [True,
                                                                       "red", 4]}})))
        a, b = np.asarray(framed.images[0].convert("RGB")), np.asarray(plain.images[0].convert("RGB"))
        assert (a[:4] == (220, 30, 30)).all() and (a[:, -4:] == (220, 30, 30)).all()  # the frame
        assert np.array_equal(a[4:-4, 4:-4], b[4:-4, 4:-4])  # the picture inside is the same
        assert "Example frame: red 4px" in framed.infotexts[0] and "Example frame" not in plain.infotexts[0]
        from PIL import Image

        assert np.array_equal(np.asarray(Image.open(framed.paths[0]).convert("RGB")), a)  # saved framed

        demo = ui_app.create(rt)
        blocks = list(demo.blocks.values())
        assert any(isinstance(b, gr.Tab) and b.label == "Example" for b in blocks)
        assert any(isinstance(b, gr.Markdown) and "Framed **1** image(s)" in str(b.value) for b in blocks)
        head, files = tab.page_head(rt.extensions.active)
        assert "kiln-example/javascript/example.js" in head and "kiln-example/style.css" in head
    finally:
        rt.jobs.shutdown(wait=True, timeout=30)
