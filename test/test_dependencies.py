"""docs/ARCHITECTURE.md's dependency table, enforced on every project import (module level and inside functions).

The table is read from the document itself (section "## Dependencies"), so the document and this test cannot
drift apart: a row naming a folder or module that does not exist fails here too.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
SOURCES = ("process.py", "runner", "interfaces", "model", "evaluation", "simulation", "benchmarks", "test")
EVERYTHING, NOTHING = "everything", "nothing"
ENTRY = re.compile(r"`([\w.]+)`( lazily)?")


def project_files() -> list[Path]:
    files = []
    for source in SOURCES:
        path = ROOT / source
        files += [path] if path.is_file() else sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
    return files


def module_of(path: Path) -> str:
    """Dotted module name as Python imports it. test/ is no package: pytest puts it on sys.path, so its helper
    modules are imported by their bare name."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] == "test":
        parts.pop(0)
    return ".".join(parts)


def is_module(name: str, local: set[str]) -> bool:
    """Whether `name` is a project module or package (or a test-local module, for files in test/)."""
    if name in local:
        return True
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def read_table(text: str) -> dict[str, set[tuple[str, bool]] | str]:
    """{row key (a path: `runner`, `simulation/demo.py`): EVERYTHING or {(module, lazily only)}}."""
    section = text.split("\n## Dependencies\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert [c.strip() for c in rows[0].strip("|").split("|")][:2] == ["package", "may import"], rows[0]
    table = {}
    for line in rows[2:]:
        key_cell, allowed_cell = [c.strip() for c in line.strip("|").split("|")][:2]
        key = key_cell.strip("`")
        if allowed_cell in (EVERYTHING, NOTHING):
            table[key] = EVERYTHING if allowed_cell == EVERYTHING else set()
            continue
        entries = set()
        for item in allowed_cell.split(","):
            match = ENTRY.fullmatch(item.strip())
            assert match, f"ARCHITECTURE.md, row {key}: cannot read {item.strip()!r} (a `module`, maybe 'lazily')"
            entries.add((match.group(1), bool(match.group(2))))
        table[key] = entries
    return table


TABLE = read_table(ARCHITECTURE.read_text())


def owner_row(path: Path) -> str | None:
    """The most specific row for a file: its own path, else its nearest listed folder."""
    rel = path.relative_to(ROOT)
    for candidate in [rel] + list(rel.parents):
        if candidate.as_posix() in TABLE:
            return candidate.as_posix()
    return None


def imports_of(path: Path, local: set[str]) -> list[tuple[str, int, bool]]:
    """(imported project module, line, inside a function) for every import statement of the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_of(path) if path.name == "__init__.py" else module_of(path).rpartition(".")[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the file's own package
                    anchor = package.split(".")[:len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from a import b`: the module a.b when there is one, else a name defined in a
                names = [f"{base}.{a.name}" if is_module(f"{base}.{a.name}", local) else base for a in child.names]
            else:
                visit(child, nested)
                continue
            found.extend((name, child.lineno, in_function) for name in names
                         if is_module(name.split(".")[0], local))

    visit(tree, False)
    return found


def local_test_modules() -> set[str]:
    return {p.stem for p in (ROOT / "test").glob("*.py")}


def allowed(target: str, row: str, in_function: bool) -> bool:
    rule = TABLE[row]
    if rule == EVERYTHING:
        return True
    own = row.split("/")[0].removesuffix(".py")
    if target == own or target.startswith(own + "."):
        return True  # a package's modules import each other
    return any((target == name or target.startswith(name + ".")) and (in_function or not lazily)
               for name, lazily in rule)


def test_the_table_covers_every_file_and_names_only_real_modules():
    missing = [str(p.relative_to(ROOT)) for p in project_files() if owner_row(p) is None]
    assert not missing, f"files with no row in ARCHITECTURE.md's dependency table: {missing}"
    for row, rule in TABLE.items():
        assert (ROOT / row).exists(), f"ARCHITECTURE.md names {row}, which does not exist"
        for name, _ in () if rule == EVERYTHING else rule:
            assert is_module(name, set()), f"ARCHITECTURE.md, row {row}: {name} is not a project module"


def test_every_import_follows_the_table():
    local = local_test_modules()
    violations = []
    for path in project_files():
        row = owner_row(path)
        for target, line, in_function in imports_of(path, local if row == "test" else set()):
            if not allowed(target, row, in_function):
                where = "inside a function" if in_function else "at module level"
                violations.append(f"{path.relative_to(ROOT)}:{line} imports {target} {where} (row {row})")
    assert not violations, "imports the ARCHITECTURE.md table does not allow:\n" + "\n".join(violations)


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports. A package's __init__ that Python runs on the way to a
    submodule is not an edge (it is no dependency of the importer's code)."""
    local = local_test_modules()
    graph = {}
    for path in project_files():
        module = module_of(path)
        targets = {t for t, _, _ in imports_of(path, local if owner_row(path) == "test" else set())}
        graph[module] = targets - {module}  # evaluation.evaluate imports itself by name for its worker processes
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
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
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return groups


def test_no_import_circle_among_project_modules():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the finder finds one
    assert circles(import_graph()) == []


def image_copy(tmp_path: Path) -> Path:
    """What the algorithm image holds: the Dockerfile's COPY lines into /opt/app, replayed into tmp_path."""
    app = tmp_path / "app"
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if not words or words[0] != "COPY":
            continue
        *sources, destination = [w for w in words[1:] if not w.startswith("--")]
        target = app / Path(destination).relative_to("/opt/app")
        for source in sources:
            for path in sorted(ROOT.glob(source.rstrip("/"))):
                if path.is_dir():
                    shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
                else:
                    file_target = target / path.name if destination.endswith("/") else target
                    file_target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, file_target)
    return app


def test_the_image_starts_without_the_dev_packages_and_its_demo_says_why_not(tmp_path):
    app = image_copy(tmp_path)
    assert (app / "process.py").is_file() and not (app / "simulation").exists()
    env = dict(os.environ, PYTHONPATH=str(app), PYTHONDONTWRITEBYTECODE="1")
    run = [sys.executable, str(app / "process.py")]
    assert subprocess.run(run + ["--help"], cwd=app, env=env, capture_output=True, text=True).returncode == 0
    demo = subprocess.run(run + ["--demo"], cwd=app, env=env, capture_output=True, text=True)
    assert demo.returncode == 2, demo.stderr
    assert "--demo needs the dev-side packages simulation and evaluation" in demo.stderr.strip().splitlines()[-1]
