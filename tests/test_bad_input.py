"""Bad input, one table: every case must fail with an error that names what is wrong (the file, row, field or key),
through the config loader, the quadruple loader, the prompt reader, the builder and the `wrpo` command."""
import json, os
from pathlib import Path
import pytest
from wrpo.config import load_config
from wrpo.data import load_quadruples, read_rows
from wrpo.testing import toy_quadruples
from wrpo.cli import main

from conftest import CI, ROOT

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
    ("++train.variants={'..': {}}", "bad variant name '..'"), ("++train.variants={}", "train.variants: name at least one"),
    ("train.save_steps=0", "train.save_steps"), ("train.launcher={num_processes: 2}", "train.launcher: missing required key(s) ['accelerate_config']"),
    ("train.launcher={accelerate_config: x.yaml, mixed_precision: fp8}", "train.launcher.mixed_precision"),
    ("eval.models=[targets]", "eval.models: unknown entries ['targets']"), ("eval.backend=openai", "eval.backend"),
    ("eval.batch_size=0", "eval.batch_size"), ("eval.temperature=-1", "eval.temperature"), ("sourcez=1", "unknown top-level key(s) ['sourcez']"),
    # nothing silent: non-finite numbers, overrides that would replace a section, create a variant by a typo or name a run "None"
    ("train.common.learning_rate=.inf", "train.common.learning_rate: must be a finite number, got inf"),
    ("train.common.beta=.inf", "train.common.beta: must be a finite number"), ("sources.0.temperature=.nan", "sources[0].temperature: must be a finite number"),
    ("build={n: 2}", "would replace the whole of build"), ("train.variants.newv.alpha=0.3", "train.variants has no 'newv'"),
    ("train.variants.wrpo=null", "would replace the whole of train.variants.wrpo"), ("name=", "override 'name=': empty value"),
    ("name=../../escape", "name: '../../escape' is not a run name"), ("build.n=[1", "the value is not valid YAML"),
    ("+build.n=3", "build.n exists already"), ("~build.nope", "there is no build.nope to delete"),
    # no raw traceback later: what cannot import, connect, load or run is refused now, naming the key
    ("reward.path=nomodule_xyz:fn", "reward.path: cannot import module 'nomodule_xyz'"), ("reward.path=wrpo.toyworld:nofn", "has no 'nofn'"),
    ("sources.0.endpoint=127.0.0.1:8000/v1", "sources[0].endpoint: '127.0.0.1:8000/v1' is not an http(s) URL"),
    ("sources.0.dtype=float33", "sources[0].dtype: 'float33'"), ("sources.0.device=gpu9", "sources[0].device: 'gpu9'"),
    ("sources.0.max_retries=-3", "sources[0].max_retries: must be >= 0"), ("build.sft_fraction=0", "build.sft_fraction: must be in (0, 1)"),
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
    (["run", "ci", "-o", "train.common.learning_rate=.inf"], "train.common.learning_rate: must be a finite number, got inf"),
    (["run", "ci", "-o", "build={n: 2}"], "would replace the whole of build"), (["validate", "ci", "-o", "name="], "empty value"),
    (["run", "ci", "-o", "reward.path=nomodule_xyz:fn"], "reward.path: cannot import module 'nomodule_xyz'"),
    (["figures", "NOWHERE"], "wrpo figures: no run directory"), (["run", "ci", "-o", "eval.exact=2.0"], "eval.exact: 2.0 lies outside the range [0.0, 1.0]"),
]

@pytest.mark.parametrize("argv, message", CLI_CASES)
def test_bad_cli(tmp_path, capsys, argv, message):
    os.chdir(tmp_path)
    assert main(argv + (["--out", str(tmp_path / "out")] if argv[0] in ("build", "run") else [])) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()                                   # nothing written before the arguments are checked


def test_pasted_secrets_are_never_echoed():
    for secret in ("sk-abc123", "sk_live_51HxYzSecret", "ghp_AbC123secret"):
        with pytest.raises(Exception) as e: load_config(CI, [f"sources.0.api_key_env={secret}"])
        assert "api_key_env: must be the NAME" in str(e.value) and secret not in str(e.value), str(e.value)

def test_duplicate_yaml_keys_are_refused(tmp_path):
    text = Path(CI).read_text()
    p = tmp_path / "dup.yaml"; p.write_text(text + "\nbuild: {n: 2}\n")           # a second top-level build: section
    with pytest.raises(Exception) as e: load_config(p)
    assert "dup.yaml" in str(e.value) and "key 'build' is given twice" in str(e.value), str(e.value)
    with pytest.raises(Exception) as e: load_config(CI, ["train.variants.wrpo={alpha: 0.1, alpha: 0.2}"])
    assert "key 'alpha' is given twice" in str(e.value), str(e.value)

def test_override_syntax_adds_replaces_and_removes_only_when_asked():
    cfg = load_config(CI, ["+train.variants.newv={alpha: 0.3}", "~train.variants.wrpo_static"], deep=False)
    assert "newv" in cfg.train.variants and "wrpo_static" not in cfg.train.variants and cfg.train.variants["newv"] == {"alpha": 0.3}
    cfg = load_config(CI, ["++build={n: 2, sft_fraction: 0.5}"], deep=False)
    assert (cfg.build.n, cfg.build.sft_fraction, cfg.build.keep_columns) == (2, 0.5, [])   # replaced whole, as asked


def test_build_out_must_be_a_directory_and_one_writer(tmp_path, capsys):
    "wrpo build: an empty --out or a file is refused; a second writer into the same build directory is refused, naming the holder"
    import subprocess, sys
    os.chdir(tmp_path)
    assert main(["build", "ci", "--out", ""]) == 2 and "--out is empty" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["build", "ci", "--out", str(tmp_path / "afile")]) == 2 and "is a file, not a directory" in capsys.readouterr().err
    out = tmp_path / "b"
    code = f"from wrpo.rundir import run_lock; import time; l = run_lock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(120)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        assert main(["build", "ci", "--out", str(out), "--prompts", str(tmp_path / "none.jsonl")]) == 1
        err = capsys.readouterr().err
        assert "is in use by another wrpo run" in err and f"PID {p.pid}" in err, err
        assert sorted(x.name for x in out.iterdir()) == [".wrpo.lock"]                 # nothing else written
    finally: p.kill(); p.wait()

def test_prompt_file_errors_name_the_file_and_row(tmp_path, capsys, caplog):
    "A bad prompt row fails naming the file and the row; keep_columns naming a column no row has is said; a missing split names the path and the option"
    os.chdir(tmp_path)
    bad = tmp_path / "prompts.jsonl"; bad.write_text('{"prompt": "add 1+2", "skill": "add"}\n{"prompt": ""}\n')
    assert main(["build", "ci", "--stage", "sources", "--prompts", str(bad), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: prompt row 1, field 'prompt': empty prompt" in err, err
    from wrpo.build import prepare_prompts
    prepare_prompts([{"prompt": "a", "skill": "x"}], keep_columns=["skil"])
    assert "build.keep_columns: no prompt row has column(s) ['skil'] (the rows have ['prompt', 'skill'])" in caplog.text, caplog.text
    from datasets import Dataset, DatasetDict
    DatasetDict(test=Dataset.from_list([{"prompt": "x"}])).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(KeyError) as e: read_rows(tmp_path / "dd")
    assert str(tmp_path / "dd") in str(e.value) and "split 'train' not in its splits ['test']" in str(e.value) and "`split` option" in str(e.value)


def test_figures_and_out_say_what_is_wrong(tmp_path, capsys):
    os.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert main(["run", "ci", "--out", str(tmp_path / "afile")]) == 2 and "is a file, not a directory" in capsys.readouterr().err
    (tmp_path / "unfinished").mkdir()
    assert main(["figures", str(tmp_path / "unfinished")]) == 2
    assert "has not finished (no results.json)" in capsys.readouterr().err
    assert not (tmp_path / "unfinished" / "figures").exists() and not (tmp_path / "unfinished" / "notebooks").exists()
    (tmp_path / "unfinished" / "results.json").write_text("{}")
    assert main(["figures", str(tmp_path / "unfinished"), "--sweep", str(tmp_path / "nosweep")]) == 2
    assert "wrpo figures --sweep: no" in capsys.readouterr().err

def test_repeated_quadruple_rows_are_said(recwarn):
    rows = toy_quadruples(4); rows.append(dict(rows[1]))
    load_quadruples(rows)
    assert any("1 of 5 quadruples repeat an earlier row exactly (row, repeat: [(1, 4)]" in str(w.message) for w in recwarn), [str(w.message) for w in recwarn]

def test_offline_hub_models_not_in_the_cache(tmp_path, capsys, monkeypatch):
    "Offline, a hub id that is not in the local cache fails `wrpo run` at once (one line, nothing written); `wrpo validate` lists them"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1"); monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))   # an empty cache
    os.chdir(tmp_path)
    assert main(["run", "paper", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert "sources[0].model: google/gemma-2-27b-it (and 9 more) is not in the local Hugging Face cache" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "p").exists()
    assert main(["validate", "paper"]) == 0
    assert "target.model: meta-llama/Meta-Llama-3-8B-Instruct" in json.loads(capsys.readouterr().out)["not_available_offline"]
