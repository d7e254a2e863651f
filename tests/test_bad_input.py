"""Bad input, one table: every case must fail with an error that names what is wrong (the file, row, field or key),
through the config loader, the quadruple loader, the prompt reader, the builder and the `wrpo` command."""
import json, os
from pathlib import Path
import pytest
from wrpo.config import load_config
from wrpo.data import load_quadruples, read_rows
from wrpo.testing import toy_quadruples
from wrpo.cli import main

ROOT = Path(__file__).resolve().parents[1]
CI = str(ROOT / "configs" / "ci.yaml")

CONFIG_CASES = [  # (override, what the message must contain)
    ("build.nn=3", "build: unknown key(s) ['nn']"), ("build.sft_fracton=0.3", "did you mean 'sft_fraction'"),
    ("build.n=0", "build.n: must be >= 1"), ("build.n=abc", "build.n: expected int"), ("build.sft_fraction=1", "build.sft_fraction"),
    ("build.shard_size=0", "build.shard_size"), ("build.tie_policy=ignore", "build.tie_policy"), ("build.top_k=0", "build.top_k"),
    ("sources.0.top_p=0", "sources[0].top_p"), ("sources.0.temperature=-1", "sources[0].temperature"),
    ("sources.0.backend=tgi", "sources[0].backend"), ("sources.1.name=src_llama_add", "duplicate name(s) ['src_llama_add']"),
    ("sources.0.max_new_tokens=0", "sources[0].max_new_tokens"), ("sources.0.model=/no/such/dir", "sources[0].model: /no/such/dir does not exist"),
    ("sources.0.api_key_env=sk-abc123", "sources[0].api_key_env: must be the NAME"), ("target.n=0", "target.n: must be >= 1"),
    ("reward.kind=rm", "reward.kind"), ("reward.path=nocolon", "reward.path"), ("reward.batch_size=0", "reward.batch_size"),
    ("pipeline.heldout_fraction=1", "pipeline.heldout_fraction"), ("pipeline.heldout_fraction=abc", "pipeline.heldout_fraction: expected float"),
    ("pipeline.prompts.path=x.jsonl", "pipeline.prompts: give exactly one of 'path'"), ("pipeline.prompts.n=0", "pipeline.prompts.n"),
    ("pipeline.logp_shift_models=[nope]", "pipeline.logp_shift_models: 'nope' is not a variant"),
    ("train.variants.wrpo.alpha=1.5", "train.variants.wrpo (with train.common).alpha: must lie in [0, 1]"),
    ("train.common.beta=-0.1", "beta: must be > 0"), ("train.common.beta=abc", "beta: expected float"),
    ("train.common.learning_rate=-1", "learning_rate: must be > 0"), ("train.common.num_train_epochs=0", "num_train_epochs: must be > 0"),
    ("train.sft.learning_rate=0", "train.sft.learning_rate: must be > 0"), ("train.common.betta=0.1", "did you mean 'beta'"),
    ("train.variants.wrpo.loss_type=xpo", "loss_type"), ("train.variants.wrpo.alpha_schedule=cosine", "alpha_schedule"),
    ("train.variants={'..': {}}", "bad variant name '..'"), ("train.variants={}", "train.variants: name at least one"),
    ("train.save_steps=0", "train.save_steps"), ("train.launcher={num_processes: 2}", "train.launcher: missing required key(s) ['accelerate_config']"),
    ("train.launcher={accelerate_config: x.yaml, mixed_precision: fp8}", "train.launcher.mixed_precision"),
    ("eval.models=[targets]", "eval.models: unknown entries ['targets']"), ("eval.backend=openai", "eval.backend"),
    ("eval.batch_size=0", "eval.batch_size"), ("eval.temperature=-1", "eval.temperature"), ("sourcez=1", "unknown top-level key(s) ['sourcez']"),
]

@pytest.mark.parametrize("override, message", CONFIG_CASES)
def test_bad_config(override, message):
    with pytest.raises(Exception) as e: load_config(CI, [override])
    msg = str(e.value)
    assert "ci.yaml" in msg, msg                                              # the file
    assert (message or override.split("=")[0].split(".")[0]) in msg, msg      # the key
    assert "sk-abc123" not in msg                                             # never a secret

def _rows_file(tmp_path, rows, name="q.jsonl"):
    p = tmp_path / name; p.write_text("".join(json.dumps(r) + "\n" for r in rows)); return p

def _q(**change):
    rows = toy_quadruples(3)
    for k, v in change.items(): rows[1][k] = v
    return rows

LOADER_CASES = [
    (_q(prompt=""), "row 1, field 'prompt': empty string"), (_q(rejected=None), "row 1: missing field 'rejected'"),
    (_q(target_chosen=[{"role": "assistant"}]), "row 1, field 'target_chosen': message 0 must be a dict with 'role' and 'content'"),
    (_q(source_chosen=[{"role": "user", "content": "x"}]), "row 1, field 'source_chosen': message 0 has role 'user'"),
    (_q(score_rejected=float("nan")), "row 1, field 'score_rejected': non-finite score"), (_q(score_rejected="high"), "row 1, field 'score_rejected'"),
    (_q(source_id=3), "row 1, field 'source_id': expected a string"), (_q(prompt="plain text"), "row 1: mixes plain strings"),
]

@pytest.mark.parametrize("rows, message", LOADER_CASES)
def test_bad_quadruples(tmp_path, rows, message):
    with pytest.raises(Exception) as e: load_quadruples(_rows_file(tmp_path, rows))
    assert message in str(e.value), str(e.value)

def test_bad_files(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'{"prompt": "x"}\n\xff\xfe\n')
    (tmp_path / "b.jsonl").write_text('{"prompt": "x"}\n[1, 2]\n')
    (tmp_path / "c.yaml").write_text("name: [unclosed\n")
    cases = [(lambda: read_rows(tmp_path / "a.jsonl"), "a.jsonl: line 2 is not UTF-8"),
             (lambda: read_rows(tmp_path / "b.jsonl"), "b.jsonl line 2 (row 1): expected a JSON object"),
             (lambda: read_rows(tmp_path / "none.jsonl"), "file not found"), (lambda: load_config(tmp_path / "c.yaml"), "c.yaml: not valid YAML"),
             (lambda: load_quadruples([{"prompt": "x", "answer": "y"}]), "unknown schema with columns ['answer', 'prompt']"),
             (lambda: load_quadruples([{"prompt": "x", "chosen": ["a"], "rejected": ["b"]}]), "the release format needs a list [y_ws, y_wt]")]
    for fn, message in cases:
        with pytest.raises(Exception) as e: fn()
        assert message in str(e.value), (message, str(e.value))

CLI_CASES = [  # (argv, what the one-line error must contain); exit code 2, nothing written
    (["validate", "nope"], "no config 'nope'"), (["validate", "ci", "-o", "build.n"], "override 'build.n': expected key=value"),
    (["validate", "ci", "-o", "sources.zz.n=1"], "no list item 'zz'"), (["build", "ci", "--shard", "3/2"], "--shard: need 0 <= i < n"),
    (["build", "ci", "--shard", "x"], "--shard: expected i/n"), (["build"], "name a config"),
    (["build", "ci", "--config", "demo"], "two configs given"), (["run", "ci", "-o", "train.common.beta=0"], "beta: must be > 0"),
]

@pytest.mark.parametrize("argv, message", CLI_CASES)
def test_bad_cli(tmp_path, capsys, argv, message):
    os.chdir(tmp_path)
    assert main(argv + (["--out", str(tmp_path / "out")] if argv[0] in ("build", "run") else [])) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()                                   # nothing written before the arguments are checked
