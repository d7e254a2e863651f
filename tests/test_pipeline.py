"""The offline miniature end to end through the real `wrpo` command and papermill (no mocks), at `ci` size."""
import json, os, subprocess, sys, zipfile
from pathlib import Path
import pytest

pytestmark = pytest.mark.slow   # the full tier only (scripts/test.sh); --fast deselects it

from conftest import ENV, ROOT, WRPO

@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("cwd")            # not the checkout: shipped configs and notebooks are found as package data
    out = work / "run"
    r = subprocess.run(WRPO + ["demo", "--size", "ci", "--out", str(out), "--quiet"], cwd=work, env=ENV,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    errors = [l for l in (r.stdout + r.stderr).splitlines() if "ERROR" in l or "Traceback" in l]
    assert not errors, errors   # a good run ends clean: an ERROR line must mean an error (the kernel's shutdown SIGINT logged one)
    return out

def test_artefacts(ci_run):
    for f in ["results.json", "results.md", "config.yaml", "models.json", "notebooks/fuse.ipynb", "build/quadruples",
              "build/sft", "models/target_sft", "data/train", "data/heldout", "eval/internal.json"]:
        assert (ci_run / f).exists(), f
    for fig in ["source_contribution", "logp_shift", "reward_margins"]:
        for ext in ("png", "pdf"): assert (ci_run / "figures" / f"{fig}.{ext}").stat().st_size > 1000, (fig, ext)
    nb = json.loads((ci_run / "notebooks" / "fuse.ipynb").read_text())
    assert any("pipeline finished" in "".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))

def test_results_rows_and_ranges(ci_run):
    res = json.loads((ci_run / "results.json").read_text())
    variants = ["dpo", "hybrid_dpo", "wrpo", "wrpo_static"]
    sources = ["src_llama_add", "src_gpt2_reverse", "src_qwen2_sort"]
    assert set(res["models"]) == set(sources + ["target", "target_sft"] + variants)
    for name, m in res["models"].items():
        assert 0 <= m["overall"]["accuracy"] <= 1 and 0 <= m["overall"]["reward"] <= 1, name
        assert set(m["groups"]) == {"add", "reverse", "sort", "max"}, name
        for g in m["groups"].values(): assert 0 <= g["accuracy"] <= 1 and 0 <= g["reward"] <= 1
    assert set(res["internal"]) == set(variants)
    for v in variants:
        for k in ("hybrid_accuracy", "onpolicy_accuracy", "weighted_accuracy"): assert 0 <= res["internal"][v][k] <= 1
    assert res["variants"]["wrpo"]["alpha_schedule"] == "dynamic" and res["variants"]["dpo"]["alpha"] == 0.0
    md = (ci_run / "results.md").read_text()
    for name in res["models"]: assert f"| {name} |" in md

def test_the_world_is_built_right(ci_run):
    "Each source beats the target on its own skill (else fusion has nothing to transfer)."
    m = json.loads((ci_run / "results.json").read_text())["models"]
    for src, skill in [("src_llama_add", "add"), ("src_gpt2_reverse", "reverse"), ("src_qwen2_sort", "sort")]:
        assert m[src]["groups"][skill]["accuracy"] > m["target"]["groups"][skill]["accuracy"] + 0.2, (src, skill)

def test_quadruples_valid_and_provenance(ci_run):
    from datasets import load_from_disk
    from wrpo.data import load_quadruples
    q = load_quadruples(str(ci_run / "build" / "quadruples"))
    stats = json.loads((ci_run / "build" / "stats.json").read_text())
    assert len(q) == stats["rows"] > 0
    assert sum(v["count"] for v in stats["contribution"].values()) == len(q)
    assert all(s > t for s, t in zip(q["score_target_chosen"], q["score_rejected"]))   # ties dropped by policy
    n_train, n_held = len(load_from_disk(str(ci_run / "data" / "train"))), len(load_from_disk(str(ci_run / "data" / "heldout")))
    assert n_train + n_held == len(q)

def test_training_logs_have_the_schedule(ci_run):
    log = [h for h in json.loads((ci_run / "logs" / "wrpo.json").read_text()) if "loss" in h]
    alphas = [h["alpha"] for h in log]
    assert alphas[0] == 0.0 and alphas == sorted(alphas) and abs(alphas[-1] - 0.5) < 0.1
    assert all("margins/hybrid" in h and "margins/onpolicy" in h for h in log)

def test_rerun_resumes_without_redoing(ci_run):
    "A second run on the finished directory redoes nothing and gives the same results."
    before = json.loads((ci_run / "results.json").read_text())
    r = subprocess.run(WRPO + ["run", "ci", "--out", str(ci_run), "--quiet", "--no-figures"], env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    after = json.loads((ci_run / "results.json").read_text())
    assert after["models"] == before["models"]
    drop = lambda t: {k: v for k, v in t.items() if k != "models"}    # the (shipped) zoo is provided again; nothing else runs
    assert drop(after["timings"]) == drop(before["timings"])

def test_cards_say_what_each_model_is(ci_run):
    "The results stage wrote a Hub card for every trained model and one for the quadruples; their metadata read back equal the run's own files."
    from datasets import load_from_disk
    from huggingface_hub import DatasetCard, ModelCard
    res = json.loads((ci_run / "results.json").read_text())
    stats = json.loads((ci_run / "build" / "stats.json").read_text())
    for name in ["target_sft", *res["variants"]]:
        card = ModelCard.load(ci_run / "models" / name / "README.md")
        d = card.data
        assert (d.license, d.library_name, d.base_model) == ("unknown", "transformers", None), name   # the toy world's models state no licence; the target is local
        assert {"wrpo", "model-fusion"} <= set(d.tags), d.tags
        got = {(r.dataset_type, r.metric_type): r.metric_value for r in d.eval_results}
        ov = res["models"][name]["overall"]
        assert got[("wrpo-heldout-prompts", "accuracy")] == ov["accuracy"] and got[("wrpo-heldout-prompts", "reward")] == ov["reward"], name
        if name != "target_sft":
            assert got[("wrpo-heldout-quadruples", "internal_reward_hybrid_accuracy")] == res["internal"][name]["hybrid_accuracy"], name
        assert str(ci_run) not in card.content and "/zoo/" not in card.content   # local models by their directory's name, no machine's path
    wr = (ci_run / "models" / "wrpo" / "README.md").read_text()
    assert f"{stats['rows']} quadruples from {stats['pref_prompts']} prompts" in wr and "alpha raised linearly from 0 to 0.5" in wr
    dc = DatasetCard.load(ci_run / "build" / "quadruples" / "README.md")
    assert dc.data.license == "unknown" and f"{stats['rows']} quadruples from {stats['pref_prompts']} preference prompts" in dc.text
    assert len(load_from_disk(str(ci_run / "build" / "quadruples"))) == stats["rows"]   # a README inside does not disturb the dataset

def test_failing_cell_gives_nonzero_exit_and_points_at_notebook(tmp_path):
    r = subprocess.run(WRPO + ["run", "ci", "--out", str(tmp_path / "bad"), "--quiet", "-o", "pipeline.prompts.kwargs.n=0"],
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1
    assert "fuse.ipynb failed in cell" in r.stderr and "the executed notebook, with the error, is at" in r.stderr, r.stderr[-2000:]
    kept = Path(r.stderr.split("the executed notebook, with the error, is at ")[1].split(" (the run directory")[0])
    assert kept.exists() and '"ename"' in kept.read_text()                 # papermill's record of the error
    assert not (tmp_path / "bad" / "notebooks" / "fuse.ipynb").exists()      # a failed run leaves no notebook claiming to be the run's

@pytest.mark.parametrize("override, message", [
    ("train.variants.wrpo.alpha=1.5", "train.variants.wrpo (with train.common).alpha: must lie in [0, 1], got 1.5"),
    ("train.common.beta=-0.1", "beta: must be > 0, got -0.1"), ("train.common.learning_rate=-1", "learning_rate: must be > 0"),
    ("train.common.num_train_epochs=0", "num_train_epochs: must be > 0"), ("train.common.beta=abc", "beta: expected float, got 'abc'")])
def test_bad_config_fails_before_anything_runs(tmp_path, override, message, wrpo_main):
    "`wrpo run` validates every section first: a bad value is one line naming the file and key, exit 2, and no run directory."
    rc, out, err = wrpo_main("run", "ci", "--out", tmp_path / "run", "--quiet", "-o", override)
    assert rc == 2 and message in err and "ci.yaml" in err, err[-2000:]
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()

def test_validate_paper_config(wrpo_main):
    rc, stdout, err = wrpo_main("validate", "paper")
    assert rc == 0, err[-2000:]
    out = json.loads(stdout)
    assert len(out["samplers"]) == 11 and out["reward"] == "armorm" and "deepspeed_zero3" in out["launcher"]["accelerate_config"]

def test_wheel_ships_pipelines_and_configs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("wrpo-*.whl"))).namelist()
    for f in ["wrpo/pipelines/fuse.ipynb", "wrpo/pipelines/fig_alpha_sweep.ipynb", "wrpo/configs/demo.yaml", "wrpo/configs/paper.yaml",
              "wrpo/configs/accelerate/deepspeed_zero3.yaml", "wrpo/trainer.py", "wrpo/losses.py"]:
        assert f in names, f

def test_same_seed_same_numbers(ci_run, tmp_path):
    "A second run from scratch (shipped zoo) with the same config and seeds reproduces every number."
    again = tmp_path / "again"
    r = subprocess.run(WRPO + ["run", "ci", "--out", str(again), "--quiet", "--no-figures"], env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((d / "results.json").read_text()) for d in (ci_run, again))
    nosec = lambda m: {k: {kk: vv for kk, vv in v.items() if kk != "seconds"} for k, v in m.items()}
    assert nosec(a["models"]) == nosec(b["models"]) and a["internal"] == b["internal"] and a["build"] == b["build"]
    la, lb = (json.loads((d / "logs" / "wrpo.json").read_text()) for d in (ci_run, again))
    strip = lambda log: [{k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k} for h in log]
    assert strip(la) == strip(lb)

def test_the_kernel_dies_with_wrpo(tmp_path):
    "SIGKILL of wrpo's process group: the notebook kernel (started in a session of its own) goes too, within seconds, instead of training on"
    import psutil, signal, time
    p = subprocess.Popen(WRPO + ["run", "ci", "--out", str(tmp_path / "run"), "--quiet"], env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        kernel, deadline = None, time.time() + 120
        while kernel is None and time.time() < deadline:
            kernel = next((c for c in psutil.Process(p.pid).children(recursive=True) if "ipykernel" in " ".join(c.cmdline())), None)
            time.sleep(0.5)
        assert kernel is not None, "no kernel started"
        time.sleep(3)                                                        # the kernel is working on the run
        os.killpg(p.pid, signal.SIGKILL); p.wait()
        t0 = time.time()
        gone, alive = psutil.wait_procs([kernel], timeout=15)
        assert not alive, f"the kernel {kernel.pid} outlived wrpo by more than 15 s"
        print(f"kernel gone {time.time() - t0:.1f} s after wrpo was killed")
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL)

def test_second_run_into_a_busy_directory_fails_at_once(tmp_path):
    "A run directory is locked for the whole run: a second `wrpo run` into it fails at once, naming the holder's PID."
    import signal
    code = f"from wrpo.rundir import run_lock; import time; l = run_lock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(120)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert p.stdout.readline().strip() == "held"
        r = subprocess.run(WRPO + ["run", "ci", "--out", str(tmp_path), "--quiet"], env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 1 and f"in use by another wrpo run (PID {p.pid}" in r.stderr, r.stderr[-2000:]
        assert not (tmp_path / "notebooks").exists()
    finally: p.send_signal(signal.SIGKILL); p.wait()

def test_changed_settings_are_refused_or_redone_never_mixed(ci_run, tmp_path):
    "A rerun with other settings never reuses outputs made with the old ones: it refuses, naming the key, or --redo redoes exactly the affected stages."
    import hashlib, shutil
    run = tmp_path / "run"; shutil.copytree(ci_run, run)
    digest = lambda v: hashlib.sha256((run / "models" / v / "model.safetensors").read_bytes()).hexdigest()
    before = {v: digest(v) for v in ("wrpo", "dpo")}
    files = ("config.yaml", "models.json", "timings.json", "stages.json", "notebooks/fuse.ipynb", "results.json")
    snap = {f: (run / f).read_bytes() for f in files}
    r = subprocess.run(WRPO + ["run", "ci", "--out", str(run), "--quiet", "--no-figures", "-o", "train.variants.wrpo.alpha=0.9"],
                       env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 1 and "stage 'train/wrpo' was made with other settings (alpha: 0.5 -> 0.9)" in r.stderr, r.stderr[-3000:]
    assert {v: digest(v) for v in before} == before                     # nothing touched
    assert {f: (run / f).read_bytes() for f in files} == snap           # and nothing rewritten: the run still describes itself
    r = subprocess.run(WRPO + ["run", "ci", "--out", str(run), "--quiet", "--no-figures", "--redo", "-o", "train.variants.wrpo.alpha=0.9"],
                       env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert digest("wrpo") != before["wrpo"] and digest("dpo") == before["dpo"]   # only the changed variant was retrained
    res = json.loads((run / "results.json").read_text())
    assert res["variants"]["wrpo"]["alpha"] == 0.9
    log = [h for h in json.loads((run / "logs" / "wrpo.json").read_text()) if "loss" in h]
    assert abs(log[-1]["alpha"] - 0.9) < 0.1                               # the new model's own log, not the old one
    st = json.loads((run / "stages.json").read_text())
    assert st["eval/wrpo"]["upstream"]["train/wrpo"] == st["train/wrpo"]["fingerprint"]   # its evaluation was redone on the new model
    assert st["eval/dpo"] == json.loads((ci_run / "stages.json").read_text())["eval/dpo"]   # the others were kept

def test_beyond_the_paper_variants_on_the_ci_run(ci_run, tmp_path):
    "configs/beyond.yaml on the ci run's data and Target-SFT: k = 1 reproduces the run's WRPO log exactly; k = 2, 3 and the baselines train and are evaluated."
    out = tmp_path / "beyond"   # beyond.yaml builds what ci.yaml builds, so the ci run's build and Target-SFT are reused
    r = subprocess.run(WRPO + ["run", "beyond", "--out", str(out), "--quiet", "--no-figures", "-o", f"pipeline.reuse_from={ci_run}"], env=ENV, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    res = json.loads((out / "results.json").read_text())
    variants = ["wrpo", "wrpo_k2", "wrpo_k3", "wrpo_k3_softmax", "sigmoid_mean", "fusechat"]
    assert set(res["models"]) == {"src_llama_add", "src_gpt2_reverse", "src_qwen2_sort", "target", "target_sft", "dpo", "hybrid_dpo", "wrpo_static", *variants}
    assert [res["variants"][v]["source_k"] for v in variants[:4]] == [1, 2, 3, 3]
    assert res["variants"]["fusechat"]["data_mode"] == "same_source" and res["variants"]["fusechat"]["objective"] == "ln_dpo"
    strip = lambda log: [{k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k} for h in log]
    logs = {v: json.loads((out / "logs" / f"{v}.json").read_text()) for v in variants}
    for v in ("wrpo", "dpo", "hybrid_dpo", "wrpo_static"):   # k = 1 on data with extra columns: the paper's variants, bit for bit
        assert strip(json.loads((out / "logs" / f"{v}.json").read_text())) == strip(json.loads((ci_run / "logs" / f"{v}.json").read_text())), v
    loss = lambda v: [h["loss"] for h in logs[v] if "loss" in h]
    assert loss("wrpo_k2") != loss("wrpo") and loss("wrpo_k3") != loss("wrpo_k2") and loss("wrpo_k3_softmax") != loss("wrpo_k3")
    from datasets import load_from_disk
    from wrpo.data import same_source_pairs
    q = load_from_disk(str(out / "build" / "quadruples"))
    n_pairs = len(same_source_pairs(q))
    assert 0 < n_pairs < len(q)
    assert all(s - r >= 0.1 for s, r in zip(*(same_source_pairs(q)[c] for c in ("score_source_chosen", "score_rejected"))))
