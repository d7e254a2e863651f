"""The shipped configs: derived ones say only what differs from their base (`base:`), and every one resolves to exactly
what it resolved to when each file still spelled out every key (tests/fixtures/resolved_configs.json, written then)."""
import json
import pytest, yaml
from conftest import CONFIGS
from wrpo.config import config_to_dict, config_yaml, load_config

RESOLVED = json.loads((CONFIGS.parent / "tests" / "fixtures" / "resolved_configs.json").read_text())
DERIVED = {"ci_styled": "ci", "ci_seeds": "ci", "sweep_seeds": "ci", "beyond": "ci", "demo_styled": "demo", "sweep": "demo"}

def leaves(d, prefix=""):
    "The dotted keys of every leaf of a nested mapping (lists are leaves)"
    if not isinstance(d, dict) or not d: return [prefix.rstrip(".")]
    return [k for key, v in d.items() for k in leaves(v, f"{prefix}{key}.")]

ADDED_SINCE = {("build", "truncated"): "drop", ("benchmarks", "workers"): "auto", ("build", "workers"): "auto", ("benchmarks", "answer_chunk"): 64}   # keys the schema gained after the fixture was written, with their default
# (build.truncated: what a response cut at max_new_tokens may be; every shipped config leaves it at the default)

@pytest.mark.parametrize("name", sorted(RESOLVED))
def test_resolves_as_before(name):
    "Key for key, value for value and in the same order (the order of train.variants is the order runs train and tables list)"
    got = config_to_dict(load_config(name, deep=False))
    for (sec, key), default in ADDED_SINCE.items(): assert got[sec].pop(key) == default, (name, sec, key)
    assert json.dumps(got) == json.dumps(RESOLVED[name])

@pytest.mark.parametrize("name, base", sorted(DERIVED.items()))
def test_derived_configs_are_deltas(name, base):
    raw = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert raw.pop("base") == base
    written, resolved = len(leaves(raw)), len(leaves(RESOLVED[name]))
    assert written <= 0.3 * resolved, f"{name}.yaml writes {written} of its {resolved} keys: say only what differs from {base}"

def test_validate_resolved_prints_the_merged_config(wrpo_main, tmp_path):
    rc, out, err = wrpo_main("validate", "ci_seeds", "--resolved", "-o", "build.n=3")
    assert rc == 0, err
    f = tmp_path / "resolved.yaml"; f.write_text(out)
    got = config_to_dict(load_config(f, deep=False))
    assert got["build"]["n"] == 3 and list(got["train"]["variants"]) == ["dpo", "wrpo"] and "base" not in yaml.safe_load(out)
    assert got == {**RESOLVED["ci_seeds"], "build": {**RESOLVED["ci_seeds"]["build"], "n": 3, "truncated": "drop", "workers": "auto"},
                   "benchmarks": {**RESOLVED["ci_seeds"]["benchmarks"], "workers": "auto", "answer_chunk": 64}}
    assert out == config_yaml(load_config("ci_seeds", ["build.n=3"]))
