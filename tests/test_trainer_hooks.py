"""WRPOTrainer's overrides of trl are listed, and listed right: `TRL_HOOKS` (wrpo.trainer), the table in
nbs/06_trainer.ipynb and the class docstring name exactly the trl/transformers methods the class replaces, each
original exists where they say, and each override takes the original's parameters (the declared exceptions aside)."""
import inspect, json, re
from pathlib import Path
import pytest
import trl
from transformers import Trainer
from trl import DPOTrainer
from wrpo.trainer import TRL_HOOKS, TRL_KEYWORD_ONLY, TRL_TESTED, WRPOTrainer, hook_problems

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"DPOTrainer": DPOTrainer, "Trainer": Trainer}

def test_no_hook_problems():
    assert hook_problems() == []

@pytest.mark.parametrize("name", sorted(TRL_HOOKS))
def test_the_original_exists_on_the_named_class(name):
    orig = vars(CLASSES[TRL_HOOKS[name]]).get(name)
    assert callable(orig), f"{TRL_HOOKS[name]} defines no callable {name!r} in trl {trl.__version__}"
    assert next(c for c in DPOTrainer.__mro__ if name in vars(c)) is CLASSES[TRL_HOOKS[name]]   # the one DPOTrainer runs

@pytest.mark.parametrize("name", sorted(TRL_HOOKS))
def test_the_override_takes_the_originals_parameters(name):
    ours = inspect.signature(vars(WRPOTrainer)[name]).parameters
    theirs = list(inspect.signature(vars(CLASSES[TRL_HOOKS[name]])[name]).parameters)
    kw = TRL_KEYWORD_ONLY.get(name, ())
    if kw:   # deliberate: these travel through **kwargs, by keyword only
        assert set(kw) <= set(theirs) and ours[list(ours)[-1]].kind is inspect.Parameter.VAR_KEYWORD
        assert [p for p in ours if ours[p].kind is not inspect.Parameter.VAR_KEYWORD] == [p for p in theirs if p not in kw]
    else: assert list(ours) == theirs

def test_the_one_declared_difference():
    assert TRL_KEYWORD_ONLY == {"__init__": ("compute_metrics", "callbacks", "optimizers", "quantization_config")}

def test_the_overrides_are_exactly_the_listed_ones():
    "A new override without an entry fails, and so does an entry whose override was removed."
    own = {n for n, v in vars(WRPOTrainer).items() if callable(v) and hasattr(DPOTrainer, n)}
    assert own == set(TRL_HOOKS), (sorted(own - set(TRL_HOOKS)), sorted(set(TRL_HOOKS) - own))

@pytest.mark.parametrize("hooks, keyword_only, expect", [
    ({**TRL_HOOKS, "no_such_hook": "DPOTrainer"}, TRL_KEYWORD_ONLY, "no_such_hook: DPOTrainer defines no method 'no_such_hook'"),
    ({**TRL_HOOKS, "_compute_loss": "Trainer"}, TRL_KEYWORD_ONLY, "_compute_loss: Trainer defines no method '_compute_loss'"),
    ({**TRL_HOOKS, "_compute_loss": "NoSuchTrainer"}, TRL_KEYWORD_ONLY, "TRL_HOOKS names class 'NoSuchTrainer'"),
    ({n: c for n, c in TRL_HOOKS.items() if n != "_compute_loss"}, TRL_KEYWORD_ONLY, "_compute_loss: WRPOTrainer overrides DPOTrainer._compute_loss, which TRL_HOOKS does not list"),
    ({**TRL_HOOKS, "log": "DPOTrainer"}, TRL_KEYWORD_ONLY, "log: listed in TRL_HOOKS, but WRPOTrainer does not override it"),
    (TRL_HOOKS, {}, "__init__: parameters ["),
    (TRL_HOOKS, {"__init__": ("compute_metrics", "no_such_param")}, "DPOTrainer.__init__ has no parameter(s) ['no_such_param']"),
])
def test_the_check_can_fail(hooks, keyword_only, expect):
    "A check that cannot fail proves nothing: each wrong table is reported."
    problems = hook_problems(hooks=hooks, keyword_only=keyword_only)
    assert any(expect in p for p in problems), problems

def test_a_drifted_subclass_is_reported():
    class Drifted(WRPOTrainer):
        def compute_loss(self, model, inputs): ...   # trl's also takes return_outputs and num_items_in_batch
    assert hook_problems(Drifted) == ["compute_loss: Drifted overrides DPOTrainer.compute_loss, which TRL_HOOKS does not list"]
    [p] = hook_problems(Drifted, hooks={**TRL_HOOKS, "compute_loss": "DPOTrainer"})
    assert p.startswith("compute_loss: parameters ['self', 'model', 'inputs'] differ"), p

def table_rows():
    nb = json.loads((ROOT/"nbs"/"06_trainer.ipynb").read_text())
    [cell] = [c for c in nb["cells"] if c["cell_type"] == "markdown" and "| hook | original in |" in "".join(c["source"])]
    return [[x.strip() for x in l.strip().strip("|").split("|")] for l in "".join(cell["source"]).splitlines() if l.startswith("| `")]

def test_the_notebook_table_matches_the_constant():
    rows = table_rows()
    assert {r[0].strip("`"): r[1].strip("`") for r in rows} == TRL_HOOKS and len(rows) == len(TRL_HOOKS)
    assert {r[-1] for r in rows} == {TRL_TESTED}
    assert all(len(r) == 4 and r[2] for r in rows), rows   # a reason in every row

def test_the_docstring_names_every_hook():
    doc = WRPOTrainer.__doc__
    assert all(f"`{n}`" in doc for n in TRL_HOOKS) and TRL_TESTED in doc, doc

def test_the_installed_trl_is_the_release_the_table_was_read_against():
    "Another trl minor release may change these internals: reread each original and update the table, then TRL_TESTED."
    minor = lambda v: tuple(v.split(".")[:2])
    assert minor(trl.__version__) == minor(TRL_TESTED), (trl.__version__, TRL_TESTED)
    pin = re.search(r'"trl>=([\d.]+),<([\d.]+)"', (ROOT/"pyproject.toml").read_text())
    assert pin and minor(pin.group(1)) == minor(TRL_TESTED), pin
