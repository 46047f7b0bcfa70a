"""The package layout and its import rules (docs/architecture.md), read from the source.

Every import counts, at the top of a module or inside a function: a lazy import is still a
dependency. No Spark is started here.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cvm_spark"
GENERATOR = ROOT / "cvm_generate"

# The stages of cvm_spark from the bottom up: a module may import its own package and the
# packages listed before it, never one after it. ``cvm_spark`` itself (``__version__``) is
# open to everyone.
LAYERS = ("common", "schemas", "config", "contract", "features", "models", "segments",
          "storage", "pipeline", "serve", "cli", "__main__")
# cvm_generate builds inputs from the config and the input schemas (with the month
# arithmetic of common), nothing else; only the command line reaches it (cvm generate,
# cvm run --generate)
GENERATOR_MAY_IMPORT = ("cvm_spark.common", "cvm_spark.config", "cvm_spark.schemas")
GENERATOR_IMPORTED_BY = ("cvm_spark.cli",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import statement in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            found.append((f"<relative level {node.level}>", [], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
    return found


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _ours(module: str) -> bool:
    return module.split(".")[0] in ("cvm_spark", "cvm_generate")


def _graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from pkg import mod`` resolved to the
    module when ``mod`` is one)."""
    files = {_module_name(p): p for p in _sources(PACKAGE) + _sources(GENERATOR)}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = set()
        for module, names, _ in _imports(path):
            if not _ours(module):
                continue
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in files]
            edges.update(subs or [module])
        graph[name] = edges - {name}
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_sits_in_a_known_stage():
    stray = [_module_name(p) for p in _sources(PACKAGE)
             if _layer(_module_name(p)) not in (*LAYERS, "")]
    assert not stray, f"modules outside the stage packages {LAYERS}: {stray}"


def test_imports_only_go_down_the_stages():
    wrong = []
    for path in _sources(PACKAGE):
        me = _module_name(path)
        mine = LAYERS.index(_layer(me)) if _layer(me) else -1
        for module, _, line in _imports(path):
            if module.startswith("<relative"):
                wrong.append(f"{me}:{line} uses a relative import")
            elif module.startswith("cvm_generate"):
                if me not in GENERATOR_IMPORTED_BY:
                    wrong.append(f"{me}:{line} imports the generator ({module})")
            elif module.startswith("cvm_spark.") and LAYERS.index(_layer(module)) > mine:
                wrong.append(f"{me}:{line} imports {module} (a later stage)")
    assert not wrong, "\n".join(wrong)


def test_the_generator_uses_only_the_config_the_schemas_and_common():
    wrong = [f"{_module_name(p)}:{line} imports {module}"
             for p in _sources(GENERATOR) for module, _, line in _imports(p)
             if module.startswith("cvm_spark")
             and not module.startswith(GENERATOR_MAY_IMPORT)]
    assert not wrong, "\n".join(wrong)


def test_no_module_takes_a_private_name_from_another():
    wrong = [f"{_module_name(p)}:{line} imports {[n for n in names if n.startswith('_')]} "
             f"from {module}"
             for p in _sources(PACKAGE) + _sources(GENERATOR)
             for module, names, line in _imports(p)
             if _ours(module) and any(n.startswith("_") and not n.startswith("__")
                                      for n in names)]
    assert not wrong, "\n".join(wrong)


# modules that work on plain Python and NumPy values, never on a DataFrame or Column: the
# BTYD likelihoods and optimiser (tested without a session, like lifetimes' fitters), the
# config and the AHP arithmetic it checks. They import no pyspark or py4j themselves (the
# config reaches pyspark's type classes only through the input schemas), and of this
# project only the schemas and each other.
NO_SPARK = ("cvm_spark.models.btyd", "cvm_spark.config", "cvm_spark.common.ahp")


def test_numpy_only_modules_import_no_spark():
    wrong = [f"{_module_name(p)}:{line} imports {module}"
             for p in _sources(PACKAGE) if _module_name(p).startswith(NO_SPARK)
             for module, _, line in _imports(p)
             if module.split(".")[0] in ("pyspark", "py4j")
             or (_ours(module) and not module.startswith(("cvm_spark.schemas", *NO_SPARK)))]
    assert not wrong, "\n".join(wrong)


def test_broad_excepts_raise_again():
    """``except Exception`` (or wider) only where the handler raises again: a crash must not
    turn into a fallback or a wrong message. Narrow handlers name what they expect."""
    wrong = []
    for p in _sources(PACKAGE) + _sources(GENERATOR):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ExceptHandler):
                continue
            names = ([node.type] if not isinstance(node.type, ast.Tuple) else node.type.elts)
            broad = node.type is None or any(
                isinstance(n, ast.Name) and n.id in ("Exception", "BaseException") for n in names)
            if broad and not any(isinstance(n, ast.Raise) for b in node.body for n in ast.walk(b)):
                wrong.append(f"{_module_name(p)}:{node.lineno}")
    assert not wrong, f"broad except without a raise: {wrong}"


JVM_ATTRIBUTES = ("_jvm", "_jsc", "_jdf", "_jsparkSession")


def test_the_py4j_gateway_is_used_in_one_module():
    """``spark._jvm`` and friends only where Spark has no public API, in common/jvm.py."""
    allowed = PACKAGE / "common" / "jvm.py"
    wrong = [f"{_module_name(p)}:{node.lineno} uses .{node.attr}"
             for p in _sources(PACKAGE) + _sources(GENERATOR) if p != allowed
             for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
             if isinstance(node, ast.Attribute) and node.attr in JVM_ATTRIBUTES]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt in graph and state.get(nxt) is None:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if state.get(start) is None:
            visit(start, [start])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


# Sizes a reader takes in at once; longer needs a reason at its top (a docstring paragraph
# starting "Why this is long:"). Function lines are the body without the docstring.
MODULE_LINES = 400
FUNCTION_LINES = 60
LONG_REASON = "Why this is long:"


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    if (len(body) > 1 and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
        body = body[1:]
    return node.end_lineno - body[0].lineno + 1


def test_long_modules_and_functions_say_why():
    long = []
    for path in _sources(PACKAGE) + _sources(GENERATOR):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        rel = path.relative_to(ROOT)
        n_lines = len(text.splitlines())
        if n_lines > MODULE_LINES and LONG_REASON not in (ast.get_docstring(tree) or ""):
            long.append(f"{rel}: {n_lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _body_lines(node)
                if n > FUNCTION_LINES and LONG_REASON not in (ast.get_docstring(node) or ""):
                    long.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert not long, (f"over {MODULE_LINES} lines per module / {FUNCTION_LINES} per function "
                      f"without '{LONG_REASON}' at the top: {long}")


def test_the_size_rule_catches_a_long_function(tmp_path, monkeypatch):
    pkg = tmp_path / "cvm_spark"
    pkg.mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(FUNCTION_LINES + 1))
    (pkg / "a.py").write_text(f'def f():\n    """Doc."""\n{body}')
    (pkg / "b.py").write_text(f'def g():\n    """Doc.\n\n    {LONG_REASON} a table.\n    """\n'
                              f'{body}')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    monkeypatch.setattr(sys.modules[__name__], "GENERATOR", tmp_path / "none")
    with pytest.raises(AssertionError, match=r"\['cvm_spark/a\.py:1 f: 61 lines'\]"):
        test_long_modules_and_functions_say_why()


@pytest.mark.parametrize("bad, message", [
    ("from cvm_spark.pipeline.runner import run_snapshot\n", "a later stage"),
    ("from cvm_generate import write_sample\n", "imports the generator"),
    ("from . import windows\n", "relative import"),
])
def test_the_rules_catch_a_wrong_import(tmp_path, monkeypatch, bad, message):
    """The checks above are not vacuous: a features module importing the runner, the
    generator or relatively is reported."""
    fake = tmp_path / "cvm_spark" / "features"
    fake.mkdir(parents=True)
    (tmp_path / "cvm_spark" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text(bad)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "cvm_spark")
    with pytest.raises(AssertionError, match=message):
        test_imports_only_go_down_the_stages()


def test_a_cycle_is_caught(tmp_path, monkeypatch):
    pkg = tmp_path / "cvm_spark"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cvm_spark.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from cvm_spark import a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    monkeypatch.setattr(sys.modules[__name__], "GENERATOR", tmp_path / "none")
    with pytest.raises(AssertionError, match=r"cvm_spark\.a -> cvm_spark\.b -> cvm_spark\.a"):
        test_no_import_cycles()
