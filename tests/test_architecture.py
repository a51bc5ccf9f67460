"""The layers of ARCHITECTURE.md hold: no import circles (function-level
imports included) and dependencies that point downward only."""

import ast
from pathlib import Path

import hartvm

PACKAGE = Path(hartvm.__file__).resolve().parent

# Lower layers first; a module may import its own layer or those below it.
# (``hartvm/__init__.py`` re-exports names lazily and is left out.)
LAYERS = [
    {"errors", "limits", "exit_status", "paths", "code_digest", "hostfile"},
    {"cpu", "memory", "hostio", "journal"},
    {"bus", "devices", "loader"},
    {"board"},
    {"machine", "hooks"},
    {"guest"},
    {"vmm"},
    {"frontends", "__main__", "fleet"},     # fleet: the public name of frontends/fleet.py
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("hartvm",) + parts)


def _imports() -> dict[str, set[str]]:
    """Every hartvm module -> the hartvm modules it imports, at any level."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                candidates = [source] + [f"{source}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            targets |= {c for c in candidates if c in modules and c != name}
        graph[name] = targets
    return graph


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for index, layer in enumerate(LAYERS):
        if top in layer:
            return index
    raise AssertionError(f"{module} is in no layer of ARCHITECTURE.md")


def test_no_module_imports_one_that_imports_it_back():
    graph = _imports()
    # Import circles between packages' __init__ and their own modules are not
    # circles of design; strip a package's edges to its own submodules.
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for target in sorted(graph[node]):
            if target.startswith(node + "."):
                continue
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_dependencies_point_downward():
    wrong = [f"{module} imports {target}"
             for module, targets in _imports().items() if module != "hartvm"
             for target in targets if target != "hartvm" and _layer(target) > _layer(module)]
    assert not wrong, "\n".join(wrong)
