"""The house rules of docs/architecture.md, read from the source (plain AST: no code runs).

- no import cycle among the project's modules (imports inside functions count too: a
  cycle dodged by a late import is still a cycle);
- the engine (the packages under modules/) never imports the A1111 edge (the files
  directly in modules/), nor webui/;
- nothing under modules/ imports webui/, gradio or fastapi at module level (a script's
  ui() may import gradio when the page calls it);
- the extensions Kiln ships import only A1111's names (the edge), as any extension would;
- only modules/models/families/ knows a model family by its name.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("modules", "webui", "benchmarks")
FACES = ("webui", "gradio", "fastapi")
FAMILY_NAMES = {"sd1", "sd2", "sdxl", "sdxl_refiner", "sd3", "flux"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files() -> dict[str, Path]:
    files = {module_name(p): p for top in PROJECT for p in (ROOT / top).rglob("*.py")}
    files["launch"] = ROOT / "launch.py"
    return files


def imports(path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in the file; `from a import b`
    counts as importing a.b when that is a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((sub if sub in known else node.module, id(node) in top_level))
    return found


def is_edge(name: str) -> bool:
    """A1111's names: the files directly in modules/ (modules.scripts, modules.shared ...)."""
    parts = name.split(".")
    return len(parts) == 2 and parts[0] == "modules" and (ROOT / "modules" / f"{parts[1]}.py").is_file()


def is_engine(name: str) -> bool:
    return name.startswith("modules.") and not is_edge(name)


def graph() -> dict[str, set[str]]:
    files = project_files()
    known = set(files)
    return {name: {target for target, _ in imports(path, known) if target in known and target != name}
            for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: a two-module loop and a three-module loop are found."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}) == \
        [["a", "b"], ["c", "d", "e"]]


def test_the_engine_never_imports_the_edge_or_the_faces():
    files = project_files()
    known = set(files)
    wrong = [f"{name} imports {target}" for name, path in files.items() if is_engine(name)
             for target, _ in imports(path, known) if is_edge(target) or target.split(".")[0] in FACES]
    assert wrong == []


def test_modules_import_no_face_at_module_level():
    files = project_files()
    known = set(files)
    wrong = [f"{name} imports {target}" for name, path in files.items() if name.startswith("modules")
             for target, top in imports(path, known) if top and target.split(".")[0] in FACES]
    assert wrong == []


def test_shipped_extensions_use_only_a1111_names():
    known = set(project_files())
    wrong = []
    for path in (ROOT / "extensions").rglob("*.py"):
        for target, _ in imports(path, known):
            if target.startswith("modules") and not is_edge(target):
                wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert wrong == []


def test_only_the_families_package_knows_a_family_by_name():
    families = ROOT / "modules" / "models" / "families"
    wrong = []
    for path in (ROOT / "modules").rglob("*.py"):
        if families in path.parents or "training" in path.parts:
            continue  # the trainer builds the demo model, an SD 1.x by definition
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in FAMILY_NAMES:
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert wrong == []


def test_launch_needs_only_the_standard_library():
    """`python3 launch.py` runs on the system Python before the venv exists: everything it
    imports from the project (and what those import at module level, package __init__
    files included) must need nothing but the standard library."""
    import sys

    files = project_files()
    known = set(files)
    todo = [target for target, _ in imports(ROOT / "launch.py", known) if target in known]
    seen, third_party = set(), []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in known]
        for target, top in imports(files[name], known):
            if not top:
                continue
            if target in known:
                todo.append(target)
            elif target.split(".")[0] not in sys.stdlib_module_names and target != "__future__":
                third_party.append(f"{name} imports {target}")
    assert "modules.runtime.options" in seen  # the closure is the real one
    assert third_party == []
