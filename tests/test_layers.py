"""The code map's layers, checked: every import points down (or across inside one layer), and none goes round.

The order is the one at the top of the README's code map. A module's layer is its app's, except the
request side of each app (views, urls, forms, admin, template tags), which is the top layer `web`: a page may
show anything, nothing may import a page. `launcher/` (what `make run` starts) is not a Django app and sits
beside `web`; no app imports it.

Imports inside functions are allowed only where they break a real cycle (or load something heavy or
optional late), and then carry a one-line reason on the line (`# late: ...`); the test lists any other.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("apps", "botconsole", "launcher")
# Low to high. Each entry: (layer, module prefixes).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("apps.core",)),
    ("vault", ("apps.vault",)),
    ("audit", ("apps.audit",)),
    ("accounts", ("apps.accounts",)),
    ("events", ("apps.events",)),
    ("alerts", ("apps.alerts",)),
    ("exchanges", ("apps.exchanges",)),
    ("strategies", ("apps.strategies",)),
    ("bots", ("apps.bots",)),
    ("trading", ("apps.trading",)),
    ("killswitch", ("apps.killswitch",)),
    ("reviews", ("apps.reviews",)),
    ("live", ("apps.live",)),
    ("ops", ("apps.ops",)),
    ("sandbox", ("apps.sandbox",)),
    ("web", ("botconsole",)),
    ("launcher", ("launcher",)),
]
WEB_MODULES = re.compile(
    r"^apps\.([a-z_]+\.(views|urls|forms|templatetags|context_processors)|accounts\.admin(_site|_apps)?)(\.|$)"
)
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
LATE_REASON = re.compile(r"#\s*late:\s*\S")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    if WEB_MODULES.match(module):
        return "web"
    for name, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    return None


def sources() -> list[Path]:
    files: list[Path] = []
    for package in PACKAGES:
        files += [p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts]
    files = [p for p in files if p.parent != ROOT / "apps" or p.name != "__init__.py"]
    return sorted(files)


def imports(path: Path) -> list[tuple[str, int, bool, str]]:
    """(imported module, line, inside a function, the line's text) for every project import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    lines = path.read_text().splitlines()
    found: list[tuple[str, int, bool, str]] = []
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            # Imports under `if TYPE_CHECKING:` count too: a type named from a floor above is a dependency.
            if isinstance(child, ast.Import | ast.ImportFrom):
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                else:
                    parts = package.split(".")
                    base = child.module or ""
                    if child.level:  # relative: from the file's package, `level` steps up
                        base = ".".join([*parts[: len(parts) - child.level + 1], base]).rstrip(".")
                    names = [base, *(f"{base}.{a.name}" for a in child.names)]
                for name in names:
                    if name.split(".")[0] in PACKAGES:
                        found.append((name, child.lineno, in_function, lines[child.lineno - 1]))
            visit(child, inner)

    visit(tree, False)
    return found


def _graph() -> dict[str, set[str]]:
    known = {module_name(p) for p in sources()}
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sources():
        source = module_name(path)
        for name, _, _, _ in imports(path):
            target = name if name in known else name.rsplit(".", 1)[0]
            if target in known and target != source:
                graph[source].add(target)
    return graph


def test_every_module_has_a_layer() -> None:
    assert [module_name(p) for p in sources() if layer_of(module_name(p)) is None] == []


def test_imports_point_down() -> None:
    graph = _graph()
    upward = [
        f"{source} ({layer_of(source)}) imports {target} ({layer_of(target)})"
        for source, targets in graph.items()
        for target in targets
        if RANK[layer_of(target) or "web"] > RANK[layer_of(source) or "web"]
    ]
    assert upward == []


def test_no_module_is_reached_again_from_itself() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def test_imports_inside_functions_say_why() -> None:
    unexplained = sorted(
        {
            f"{path.relative_to(ROOT)}:{line}: {text.strip()}"
            for path in sources()
            for _, line, inside, text in imports(path)
            if inside and not LATE_REASON.search(text)
        }
    )
    assert unexplained == []


def test_the_readme_code_map_lists_the_same_layers() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Code map", 1)[1].split("```", 2)[1]
    listed = [line.split()[0] for line in block.splitlines() if line.strip() and not line.startswith(" ")]
    assert listed == [name for name, _ in LAYERS]


def test_only_the_exchange_port_imports_ccxt() -> None:
    offenders = []
    for path in sources():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n == "ccxt" or n.startswith("ccxt.") for n in names):
                offenders.append(module_name(path))
    assert offenders and all(m == "apps.exchanges.port" or m.startswith("apps.exchanges.port.") for m in offenders)
