"""The package's modules form layers and a DAG: every import, function-local ones included, points to the same layer or a
lower one, and no chain of imports comes back to where it started. A new module must be given a layer here."""
import ast, pkgutil
from pathlib import Path
import pytest
import wrpo

PKG = Path(wrpo.__file__).parent
LAYERS = [   # lowest first; a module imports only from its own layer or those above it in this list
    ["files", "workers", "stats", "losses", "selection", "judge_models", "data", "models", "packing"],   # foundations: files, statistics, the objective, schema, batch layouts
    ["trainer"],                                   # trl's DPOTrainer extended to the quadruple (and its argument checks)
    ["config"],                                    # the typed config: loading, base:, overrides, validation (builds trainer configs once)
    ["prompts", "sampling", "rewards", "evaluate", "judge", "arena_hard_v2", "benchmarks", "scores", "reporting"],   # components
    ["build", "cluster", "paper_eval", "plots", "rundir", "training", "cards"],   # the data builder, SLURM and the plan, the benchmarks run, figures, the run directory, training, the Hub cards
    ["stages"],                                    # the recipe: one ordered list of stages
    ["pipeline"],                                  # a run: config + run directory + the stages
    ["seeds"],                                     # many runs
    ["cli"],                                       # the `wrpo` command
]
MINIATURE = ["toyworld", "toyworld_tasks", "toyworld_models", "toyworld_zoo"]   # plugs in through configuration; the core never imports it
TESTING = ["testing"]                                                           # offline test models and oracles

def modules()->list:
    return sorted(m.name for m in pkgutil.iter_modules([str(PKG)]) if not m.name.startswith("_") and not m.ispkg)

def imports(src:str, mods:set, me:str)->set:
    "The package modules `src` imports, at the top or inside functions (`from .x import`, `from wrpo.x import`, `import wrpo.x`, `from wrpo import x`)"
    out = set()
    for n in ast.walk(ast.parse(src)):
        if isinstance(n, ast.ImportFrom):
            if n.level == 1 and n.module: names = [n.module.split(".")[0]]
            elif n.module and n.module.startswith("wrpo."): names = [n.module.split(".")[1]]
            elif (n.level == 1 and not n.module) or n.module == "wrpo": names = [a.name for a in n.names]
            else: names = []
        elif isinstance(n, ast.Import): names = [a.name.split(".")[1] for a in n.names if a.name.startswith("wrpo.")]
        else: names = []
        out |= {x for x in names if x in mods and x != me}
    return out

def graph()->dict:
    mods = set(modules())
    return {m: imports((PKG / f"{m}.py").read_text(), mods, m) for m in mods}

def cycles(g:dict)->list:
    "Strongly connected components with more than one module (Tarjan)"
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in sorted(g):
        if v not in index: visit(v)
    return out

def layer_problems(g:dict)->list:
    "Imports that point to a higher layer, or from the core to the miniature or the test models; modules without a layer"
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    probs = [f"{m}: no layer (add it to LAYERS in tests/test_architecture.py)" for m in sorted(g) if m not in rank and m not in MINIATURE + TESTING]
    for m, deps in sorted(g.items()):
        for d in sorted(deps):
            if m in rank and d in MINIATURE + TESTING: probs.append(f"{m} -> {d}: the core imports the miniature / test models")
            elif m in rank and d in rank and rank[d] > rank[m]: probs.append(f"{m} (layer {rank[m]}) -> {d} (layer {rank[d]}): an upward import")
    return probs

def test_every_layer_names_a_module_that_exists():
    names = [m for layer in LAYERS for m in layer] + MINIATURE + TESTING
    assert len(names) == len(set(names)), "a module in two layers"
    assert set(names) == set(modules()), sorted(set(modules()) ^ set(names))   # no stale name; every module placed

def test_no_import_cycle():
    assert cycles(graph()) == []

def test_imports_point_down():
    assert layer_problems(graph()) == []

def test_the_checks_can_fail():
    "A cycle hidden in a function-local import, an upward import and a core module importing the miniature are all caught"
    src = "import os\ndef f():\n    from wrpo.pipeline import Run\n    from .toyworld import build_zoo\n    import wrpo.stages\n"
    test_eq = lambda a, b: (a == b) or pytest.fail(f"{a} != {b}")
    test_eq(imports(src, set(modules()), "config"), {"pipeline", "toyworld", "stages"})
    g = {**graph(), "config": {"pipeline", "toyworld"}}
    assert ["config", "pipeline"] == [m for c in cycles(g) for m in c if m in ("config", "pipeline")]
    probs = layer_problems(g)
    assert "config (layer 2) -> pipeline (layer 6): an upward import" in probs and "config -> toyworld: the core imports the miniature / test models" in probs

def test_pipeline_module_is_small():
    n = len((PKG / "pipeline.py").read_text().splitlines())
    assert n < 250, f"wrpo/pipeline.py has {n} lines"

def test_stats_needs_only_the_standard_library():
    "The statistics leaf (t quantiles, intervals, rank correlation) runs anywhere: no numpy, torch or pandas"
    import sys
    tree = ast.parse((PKG / "stats.py").read_text())
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | \
           {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    assert all(m.split(".")[0] in sys.stdlib_module_names or m == "__future__" for m in mods), mods
