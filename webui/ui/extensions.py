"""The Extensions tab: the installed extensions (enable, check for updates, apply and
restart) and "Install from URL". The work is done by the Runtime and modules/extension_*;
these handlers only turn it into table rows and messages."""
from __future__ import annotations

import html
import time
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from modules.extensions import git as extension_git, install as extension_install
from modules.extensions.install import InstallError

HEADERS = ["Enabled", "Update", "Extension", "Built in", "Version", "Date", "Remote", "Status"]
ENABLED, UPDATE, NAME = 0, 1, 2
DISABLE_ALL = [("none: load the enabled ones", "none"), ("extra: only the ones shipped with Kiln", "extra"),
               ("all: load none", "all")]
RESTARTING = "Restarting Kiln"
# after "Apply and restart UI": wait for the server to go and come back, then reload the page
RELOAD_JS = """(status) => {
  if (!String(status || "").startsWith("%s")) return;
  const started = Date.now();
  const poll = () => fetch(window.location.href, {cache: "no-store"})
    .then(r => { if (r.ok) window.location.reload(); else setTimeout(poll, 1000); })
    .catch(() => { if (Date.now() - started < 300000) setTimeout(poll, 1000); });
  setTimeout(poll, 3000);
}""" % RESTARTING


def _state(runtime, ext) -> str:
    loaded = any(a.name == ext.name for a in runtime.extensions.active)
    would_load = ext.enabled and runtime.extensions.disable_all != "all" and (
        ext.builtin or runtime.extensions.disable_all != "extra")
    if loaded and would_load:
        return "loaded"
    if loaded:
        return "unloads after restart"
    if would_load:
        return "loads after restart"
    return "disabled" if not ext.enabled else f"off (disable all: {runtime.extensions.disable_all})"


def rows(runtime, checks: dict[str, extension_git.UpdateCheck] | None = None) -> list[list]:
    """One row per installed extension, as the table shows it."""
    checks = checks or {}
    out = []
    for ext in runtime.extensions.installed():
        v = extension_git.version(ext.path)
        version = f"{v.short} ({v.branch})" if v.short and v.branch else (v.short or "")
        date = time.strftime("%Y-%m-%d %H:%M", time.gmtime(v.commit_date)) if v.commit_date else ""
        status = [_state(runtime, ext)]
        errors = runtime.extensions.errors.for_extension(ext.name)
        if errors:
            status.append(f"{len(errors)} error{'s' * (len(errors) > 1)}: " +
                          "; ".join(sorted({e.where for e in errors})))
        check = checks.get(ext.name)
        if check:
            status.append(check.message)
        name = ext.name if ext.title == ext.name else f"{ext.name} ({ext.title})"
        out.append([ext.enabled, bool(check and check.has_update), name, "yes" if ext.builtin else "", version,
                    date, v.remote or "", "; ".join(status)])
    return out


def errors_markdown(runtime) -> str:
    errors = runtime.extensions.errors.errors
    if not errors:
        return "No extension errors since Kiln started."
    parts = []
    for e in errors:
        parts.append(f"**{html.escape(e.extension or 'Kiln')}**, {html.escape(e.where)}:\n\n```\n{e.message.strip()}\n```")
    return "\n\n".join(parts)


def _table_rows(table) -> list[list]:
    """The Dataframe's value (type="array": a list of rows; from an API client maybe
    {"headers", "data"})."""
    if isinstance(table, dict):
        table = table.get("data") or []
    return [list(r) for r in table or [] if len(r) > NAME and str(r[NAME]).strip()]


def _truthy(value) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def _folder(cell) -> str:
    return str(cell).split(" (", 1)[0].strip()  # "folder (Title)" -> folder


def apply(runtime, table, disable_all: str) -> str:
    """Save the enabled states (and fast-forward the rows marked Update), then restart."""
    table_rows = _table_rows(table)
    enabled = {_folder(r[NAME]): _truthy(r[ENABLED]) for r in table_rows}
    update = [_folder(r[NAME]) for r in table_rows if _truthy(r[UPDATE])]
    try:
        messages = runtime.extensions.apply(enabled, disable_all or None, update)
    except InstallError as e:
        raise gr.Error(str(e), print_exception=False) from None
    if runtime.extensions.restart():
        return f"{RESTARTING}… The page reloads when it is back. " + " ".join(messages)
    return "Saved. Restart Kiln to apply the changes. " + " ".join(messages)


def check(runtime) -> tuple[list[list], str]:
    try:
        checks = runtime.extensions.check_updates()
    except InstallError as e:
        raise gr.Error(str(e), print_exception=False) from None
    if not checks:
        message = "No installed extension is a git checkout: nothing to check."
    else:
        updates = [c.name for c in checks if c.has_update]
        message = (f"Updates for: {', '.join(updates)}. They are marked in the Update column: "
                   "press Apply and restart UI to install them.") if updates else "No updates found."
    return rows(runtime, {c.name: c for c in checks}), message


def install(runtime, source: str, branch: str, name: str) -> tuple[str, str, list[list]]:
    try:
        result = runtime.extensions.install(source, name, branch)
    except InstallError as e:
        raise gr.Error(str(e), print_exception=False) from None
    message = result.message + " Press Apply and restart UI (Installed tab) to load it."
    return message, result.install_output, rows(runtime)


def page_head(active_extensions, ui_js: Path | None = None) -> tuple[str, list[str]]:
    """The <head> HTML that adds the enabled extensions' javascript/*.js and style.css to
    the page (served by Gradio's file route), and the files it must be allowed to serve."""
    files: list[Path] = [ui_js] if ui_js else []
    tags = []
    for ext in active_extensions:
        files.extend(ext.javascript_files())
    for path in files:
        tags.append(f'<script type="text/javascript" src="{_file_url(path)}"></script>')
    for ext in active_extensions:
        css = ext.stylesheet()
        if css:
            files.append(css)
            tags.append(f'<link rel="stylesheet" property="stylesheet" href="{_file_url(css)}">')
    return "\n".join(tags), [str(p.resolve()) for p in files]


def _file_url(path: Path) -> str:
    path = path.resolve()
    # the modification time busts the browser's cache when the file changes
    return f"gradio_api/file={quote(str(path))}?v={int(path.stat().st_mtime)}"


def build(runtime) -> None:
    access = runtime.config.extension_access
    if not access:
        gr.Markdown(f"⚠️ {extension_install.ACCESS_REFUSED}", elem_id="extensions_access_note")
    with gr.Tabs(elem_id="extensions_tabs"):
        with gr.Tab("Installed", id="extensions_installed"):
            with gr.Row():
                apply_button = gr.Button("Apply and restart UI", variant="primary", elem_id="extensions_apply")
                check_button = gr.Button("Check for updates", elem_id="extensions_check")
                refresh = gr.Button("🔄", elem_id="extensions_refresh", scale=0, min_width=40)
            disable_all = gr.Radio(DISABLE_ALL, value=lambda: runtime.options.disable_all_extensions,
                                   label="Disable all extensions", elem_id="extensions_disable_all")
            status = gr.Markdown(elem_id="extensions_status")
            table = gr.Dataframe(value=lambda: rows(runtime), headers=HEADERS,
                                 datatype=["bool", "bool", "str", "str", "str", "str", "str", "str"],
                                 type="array", interactive=True, static_columns=list(range(2, len(HEADERS))),
                                 label="Installed extensions (tick Enabled, then Apply and restart UI)",
                                 elem_id="extensions_table", wrap=True)
            with gr.Accordion("Errors", open=False):
                errors = gr.Markdown(value=lambda: errors_markdown(runtime), elem_id="extensions_errors")
        with gr.Tab("Install from URL", id="extensions_install_tab"):
            source = gr.Textbox(label="URL of the extension's git repository, or a local folder (full path)",
                                placeholder="https://github.com/user/sd-webui-extension.git",
                                elem_id="extensions_install_url")
            with gr.Row():
                branch = gr.Textbox(label="Branch (optional)", elem_id="extensions_install_branch")
                name = gr.Textbox(label="Local folder name (optional)", elem_id="extensions_install_name")
            install_button = gr.Button("Install", variant="primary", elem_id="extensions_install_button")
            result = gr.Markdown(elem_id="extensions_install_result")
            output = gr.Textbox(label="install.py output", lines=6, interactive=False,
                                elem_id="extensions_install_output")

    apply_button.click(lambda t, d: apply(runtime, t, d), [table, disable_all], status,
                       api_name="extensions_apply").then(None, status, None, js=RELOAD_JS)
    check_button.click(lambda: check(runtime), None, [table, status], api_name="extensions_check")
    refresh.click(lambda: (rows(runtime), errors_markdown(runtime)), None, [table, errors],
                  queue=False, api_name="extensions_list")
    install_button.click(lambda s, b, n: install(runtime, s, b, n), [source, branch, name], [result, output, table],
                         api_name="extensions_install")
