"""The core does not know the miniature: no default, branch or name of `wrpo.toyworld` (its skills, its zoo) in the core
modules; the miniature plugs in through configuration (`pipeline.models`, `pipeline.prompts`, `eval.prompts` calls)."""
import importlib, inspect, pkgutil, re
import pytest
import wrpo

MINIATURE = ["toyworld", "toyworld_tasks", "toyworld_models", "toyworld_zoo"]   # the offline miniature: outside the core
TESTING = ["testing"]   # tiny offline models and oracles for tests (nbs/90_testing.ipynb): may name anything
MODULES = sorted(m.name for m in pkgutil.iter_modules(wrpo.__path__) if not m.name.startswith("_") and not m.ispkg)
CORE = [m for m in MODULES if m not in MINIATURE + TESTING]   # every other module of the package, present and future
WORDS = re.compile(r"toyworld|\bskill|VerifierReward|make_prompts|build_zoo|src_llama|target_mistral")

def test_the_package_is_core_miniature_and_testing():
    assert set(MINIATURE + TESTING) <= set(MODULES), sorted(set(MINIATURE + TESTING) - set(MODULES))   # no stale name here
    assert {"config", "losses", "trainer", "pipeline", "plots", "cli"} <= set(CORE), CORE

@pytest.mark.parametrize("name", CORE)
def test_core_module_names_nothing_of_the_miniature(name):
    src = inspect.getsource(importlib.import_module(f"wrpo.{name}"))
    hits = [l.strip() for l in src.splitlines() if WORDS.search(l)]
    assert not hits, hits

def test_the_check_finds_a_miniature_name():
    "The pattern catches what it is there to catch (a check that cannot fail proves nothing)."
    for line in ['    if by is None: by = "skill"', "from wrpo.toyworld import build_zoo", "m = 'src_llama_add'"]:
        assert WORDS.search(line), line
    assert not WORDS.search("group_by = cfg.eval.group_by")

def test_the_miniature_plugs_in_through_config():
    from wrpo.config import load_config
    from wrpo.config import config_path
    for name in ("ci", "demo"):
        cfg = load_config(str(config_path(name)))
        assert cfg.pipeline.models.call == "wrpo.toyworld:build_zoo" and cfg.pipeline.prompts.call == "wrpo.toyworld:make_prompts"
        assert all(s.model.startswith("provided:") for s in cfg.sources)
