"""The core does not know the miniature: no default, branch or name of `wrpo.toyworld` (its skills, its zoo) in the core
modules; the miniature plugs in through configuration (`pipeline.models`, `pipeline.prompts`, `eval.prompts` calls)."""
import importlib, inspect, re
import pytest

CORE = ["config", "files", "losses", "selection", "data", "sampling", "rewards", "build", "trainer", "evaluate", "benchmarks", "scores", "judge", "paper_eval", "pipeline", "seeds", "cli"]
MINIATURE = ["toyworld", "toyworld_tasks", "toyworld_models", "toyworld_zoo"]   # the offline miniature: outside the core
WORDS = re.compile(r"toyworld|\bskill|VerifierReward|make_prompts|build_zoo|src_llama|target_mistral")

@pytest.mark.parametrize("name", CORE)
def test_core_module_names_nothing_of_the_miniature(name):
    src = inspect.getsource(importlib.import_module(f"wrpo.{name}"))
    hits = [l.strip() for l in src.splitlines() if WORDS.search(l)]
    assert not hits, hits

def test_the_miniature_plugs_in_through_config():
    from wrpo.config import load_config
    from wrpo.pipeline import config_path
    for name in ("ci", "demo"):
        cfg = load_config(str(config_path(name)))
        assert cfg.pipeline.models.call == "wrpo.toyworld:build_zoo" and cfg.pipeline.prompts.call == "wrpo.toyworld:make_prompts"
        assert all(s.model.startswith("provided:") for s in cfg.sources)

def test_the_miniature_modules_are_outside_the_core():
    assert not set(MINIATURE) & set(CORE)
    for name in MINIATURE: assert WORDS.search(f"wrpo.{name}") and importlib.import_module(f"wrpo.{name}")
