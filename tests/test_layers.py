"""Import layering of the low modules: `wrpo.stats` is a leaf (the standard library only), `wrpo.reporting` sits on it
and on `wrpo.files` only, and the modules that used to reach up for them (plots -> seeds, scores -> benchmarks) no
longer do. Imports anywhere in a module count, also those inside functions."""
import ast, importlib, inspect, sys
import pytest

def imported(name):
    "Every module `wrpo.<name>` imports (relative imports spelled wrpo.<module>)."
    tree = ast.parse(inspect.getsource(importlib.import_module(f"wrpo.{name}")))
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import): out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom): out.add(("wrpo." + n.module if n.module else "wrpo") if n.level else n.module)
    return out

stdlib = lambda m: m.split(".")[0] in sys.stdlib_module_names

def test_stats_is_a_leaf():
    assert all(stdlib(m) for m in imported("stats")), imported("stats")

def test_reporting_imports_only_stats_and_files():
    mods = imported("reporting")
    assert {m for m in mods if not stdlib(m)} <= {"wrpo.stats", "wrpo.files"}, mods

@pytest.mark.parametrize("name, above", [("plots", "wrpo.seeds"), ("scores", "wrpo.benchmarks"), ("plots", "wrpo.pipeline")])
def test_no_import_reaches_up(name, above):
    assert above not in imported(name), f"wrpo.{name} imports {above}"

def test_the_check_sees_imports_inside_functions():
    "A check that cannot fail proves nothing: seeds imports wrpo.plots inside `aggregate_seeds` only."
    assert "wrpo.plots" in imported("seeds") and "wrpo.stats" in imported("seeds")
