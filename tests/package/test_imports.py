"""The package's imports, read statically: no import cycle among unitgan's modules, no private name across
modules (src/unitgan, benchmarks and tests; imports at module level and inside functions alike)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
FOLDERS = (SRC / "unitgan", ROOT / "benchmarks", ROOT / "tests")


@dataclass(frozen=True)
class Module:
    name: str  # dotted import name: 'unitgan.export', 'common' (benchmarks), 'conftest' (tests)
    path: Path
    is_package: bool


def is_private(name: str) -> bool:
    """'_x' is private; dunders ('__version__', '__future__') are not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def find_modules(folders: tuple[Path, ...] = FOLDERS, src: Path = SRC) -> dict[str, Module]:
    """Every .py file as the module name it is imported by (benchmarks and tests put their folder on sys.path)."""
    modules = {}
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            if folder.parent == src:  # the package: dotted names from src/
                parts = path.relative_to(src).with_suffix("").parts
            else:  # scripts and tests: imported by name from the nearest folder above them that is no package
                base = path.parent
                while base != folder and (base / "__init__.py").exists():
                    base = base.parent
                parts = path.relative_to(base).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            modules[name] = Module(name, path, is_package)
    return modules


def imports_of(module: Module) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names imported from it) for every import statement anywhere in the file."""
    tree = ast.parse(module.path.read_text(), str(module.path))
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package upwards
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((node.lineno, base, [alias.name for alias in node.names]))
    return found


def dependency_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    """unitgan module -> the unitgan modules it imports (``from pkg import sub`` counts pkg and pkg.sub)."""
    graph: dict[str, set[str]] = {name: set() for name in modules if name.split(".")[0] == "unitgan"}
    for name in graph:
        for _, target, names in imports_of(modules[name]):
            for t in [target, *(f"{target}.{n}" for n in names)]:
                if t in graph and t != name:
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [m0, m1, ..., m0], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def private_uses(modules: dict[str, Module], root: Path = ROOT) -> list[str]:
    """'path:line: what' for each private name of a project module used from another module: ``from m import
    _x``, ``import _m`` / ``from _m import x`` (a private module), and ``m._x`` on an imported project module."""
    found = []
    for module in modules.values():
        rel = module.path.relative_to(root)
        aliases: dict[str, str] = {}  # local name bound to a project module -> that module
        for line, target, names in imports_of(module):
            top = target.split(".")[0]
            if top not in {m.split(".")[0] for m in modules} and not is_private(top):
                continue  # third-party and standard library (a private top-level name is a project helper)
            if any(is_private(p) for p in target.split(".")):
                found.append(f"{rel}:{line}: imports private module '{target}'")
            for n in names:
                if is_private(n):
                    found.append(f"{rel}:{line}: from {target} import {n}")
                elif f"{target}.{n}" in modules:
                    aliases[n] = f"{target}.{n}"
            if not names:
                aliases[target.split(".")[0]] = target
        tree = ast.parse(module.path.read_text(), str(module.path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and is_private(node.attr):
                chain, value = [node.attr], node.value
                while isinstance(value, ast.Attribute):
                    chain.append(value.attr)
                    value = value.value
                if isinstance(value, ast.Name) and value.id in aliases:
                    dotted = ".".join([value.id, *reversed(chain)])
                    found.append(f"{rel}:{node.lineno}: uses {dotted} of another module")
    return sorted(found)


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(dependency_graph(find_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_private_name_used_across_modules():
    found = private_uses(find_modules())
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_the_checks_see_cycles_and_private_names(tmp_path):
    """The checks bite on a made-up package: a cycle through a function-level import, and private uses."""
    pkg = tmp_path / "src" / "unitgan"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from unitgan.sub.b import f\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from unitgan import a\n    return a\n")
    (pkg / "c.py").write_text("import unitgan.a\nfrom unitgan.a import _g\nx = unitgan.a._h\nfrom . import _k\n")
    modules = find_modules((pkg,), src=tmp_path / "src")
    assert find_cycle(dependency_graph(modules)) == ["unitgan.a", "unitgan.sub.b", "unitgan.a"]
    found = private_uses(modules, root=tmp_path)
    assert [f.split(": ", 1)[1] for f in found] == [
        "from unitgan.a import _g",
        "uses unitgan.a._h of another module",
        "from unitgan import _k",
    ]


def train_imports(module: Module) -> list[tuple[str | None, str]]:
    """(enclosing top-level function or None for module level, imported module) for each import of
    ``unitgan.train`` or one of its modules (``from unitgan import train`` included)."""
    tree = ast.parse(module.path.read_text(), str(module.path))
    scopes: list[tuple[str | None, ast.AST]] = [(None, node) for node in tree.body]
    found = []
    while scopes:
        scope, node = scopes.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and scope is None:
            scope = node.name
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            targets = [node.module or "", *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            targets = []
            scopes += [(scope, child) for child in ast.iter_child_nodes(node)]
        if any(t == "unitgan.train" or t.startswith("unitgan.train.") for t in targets):
            found.append((scope, targets[0]))
    return sorted(found, key=str)


def test_inference_evaluate_and_the_cli_keep_clear_of_training():
    """Translating, evaluating and every command but ``train`` load no training code: checkpoint files are
    read through ``unitgan.checkpoint``, and evaluating a domain-adaptation checkpoint builds only its
    discriminator (``unitgan.models.da``), no trainer."""
    modules = find_modules()
    for name in ("unitgan.inference", "unitgan.evaluate", "unitgan.checkpoint"):
        assert train_imports(modules[name]) == [], name
    assert {scope for scope, _ in train_imports(modules["unitgan.cli"])} == {"cmd_train"}


def test_the_training_import_check_sees_where_an_import_is(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "import unitgan.train.loop\n"
        "from unitgan import train\n"
        "def f():\n    if True:\n        from unitgan.train.base import Trainer\n"
        "from unitgan.training_data import x\n"
    )
    found = set(train_imports(Module("m", path, False)))
    assert found == {(None, "unitgan"), (None, "unitgan.train.loop"), ("f", "unitgan.train.base")}


OPENERS = {"from_checkpoint", "load_export"}  # what builds a translator for a path, below open_translator


def translator_openers(module: Module) -> list[tuple[int, str]]:
    """(line, name) of each call of ``Translator.from_checkpoint`` or ``load_export`` in the module."""
    found = []
    for node in ast.walk(ast.parse(module.path.read_text(), str(module.path))):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in OPENERS:
                found.append((node.lineno, name))
    return found


def test_every_command_opens_its_translator_through_open_translator():
    """One way to open a translator for a path (checkpoint, run folder or export folder):
    ``unitgan.translator.open_translator``; the package calls the lower-level openers nowhere else."""
    modules = find_modules()
    found = [
        f"{m.path.relative_to(ROOT)}:{line}: {name}"
        for m in modules.values()
        if m.name.startswith("unitgan") and m.name != "unitgan.translator"
        for line, name in translator_openers(m)
    ]
    assert not found, "translators opened outside unitgan.translator:\n" + "\n".join(found)
