"""`wrpo seeds` end to end on the offline miniature at `ci` size, trimmed to two seeds and one variant: each seed is a
normal run with its own split and training, the zoo and evaluation prompts stay fixed, and seeds.json's means are the
means of the seeds' own results.json values."""
import json, math, os, subprocess, sys, time
from pathlib import Path
import pytest

pytestmark = pytest.mark.slow   # the full tier only (scripts/test.sh); --fast deselects it

from conftest import CI, ENV, ROOT, WRPO
TRIM = ["--reuse-sources", "-o", "pipeline.prompts.kwargs.n=360", "-o", "++train.variants={dpo: {alpha: 0.0, alpha_schedule: static}}",
        "-o", "pipeline.logp_shift_models=[dpo]", "-o", "train.sft.num_train_epochs=3", "-o", "train.common.num_train_epochs=2",
        "-o", "eval.prompts.kwargs.n_per_skill=25", "-o", "eval.models=[target, target_sft, variants]"]

@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("cwd")
    out = work / "multi"
    t0 = time.time()
    r = subprocess.run(WRPO + ["seeds", CI, "--out", str(out), "--seeds", "0,1", "--quiet", *TRIM], cwd=work, env=ENV,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    print(f"wrpo seeds, 2 seeds: {time.time() - t0:.0f} s")
    return out, r.stdout

def test_each_seed_is_its_own_run(seeds_run):
    out, stdout = seeds_run
    cfgs, splits = {}, {}
    for s in (0, 1):
        d = out / f"seed-{s}"
        for f in ("results.json", "results.md", "config.yaml", "stages.json", "notebooks/fuse.ipynb", "build/split.json", "data/split.json"):
            assert (d / f).exists(), (s, f)
        cfgs[s] = __import__("yaml").safe_load((d / "config.yaml").read_text())
        splits[s] = json.loads((d / "build" / "split.json").read_text())
    for s in (0, 1):   # the seed sets the split, sampling and training seeds ...
        c = cfgs[s]
        assert (c["build"]["seed"], c["pipeline"]["heldout_seed"], c["train"]["sft"]["seed"], c["train"]["common"]["seed"]) == (s, s, s, s)
        assert c["pipeline"]["seeds"] is None and c["eval"]["models"] == ["target", "target_sft", "variants"] and list(c["train"]["variants"]) == ["dpo"]
    for k in ("pipeline", "eval"):   # ... and nothing else: the same zoo, prompt pool and evaluation prompts
        strip = lambda c: {x: v for x, v in c[k].items() if x not in ("heldout_seed", "seeds")}
        assert strip(cfgs[0]) == strip(cfgs[1]), k
    assert json.loads((out / "seed-0" / "models.json").read_text()) == json.loads((out / "seed-1" / "models.json").read_text())
    assert cfgs[0]["build"]["reuse_sources_from"] is None                    # seed 1 reused seed 0's source samples (--reuse-sources)
    assert cfgs[1]["build"]["reuse_sources_from"] == str((out / "seed-0" / "build").resolve())
    assert splits[0]["seed"] == 0 and splits[1]["seed"] == 1
    assert sorted(splits[0]["sft"] + splits[0]["pref"]) == sorted(splits[1]["sft"] + splits[1]["pref"])   # the same prompts ...
    assert splits[0]["sft"] != splits[1]["sft"]                                                         # ... split differently
    r0, r1 = (json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in (0, 1))
    assert r0["build"]["rows"] != r1["build"]["rows"] or r0["models"]["target_sft"] != r1["models"]["target_sft"]
    same = lambda r: {k: r["models"]["target"][k] for k in ("overall", "groups")}
    assert same(r0) == same(r1)   # the untrained target answers the same evaluation prompts the same way
    assert "seeds aggregated" in stdout and "±" in stdout

def test_seeds_json_is_the_mean_of_the_seeds(seeds_run):
    out, _ = seeds_run
    agg = json.loads((out / "seeds.json").read_text())
    assert (agg["seeds"], agg["aggregated"], agg["missing"], agg["level"]) == ([0, 1], [0, 1], {}, 0.95)
    res = [json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    assert set(agg["models"]) == set(res[0]["models"]) == {"target", "target_sft", "dpo"}
    checked = 0
    for model, m in res[0]["models"].items():
        pairs = [("accuracy", lambda r: r["models"][model]["overall"]["accuracy"]), ("reward", lambda r: r["models"][model]["overall"]["reward"])]
        pairs += [(f"accuracy/{g}", lambda r, g=g: r["models"][model]["groups"][g]["accuracy"]) for g in m["groups"]]
        for metric, get in pairs:
            a = agg["models"][model][metric]
            vals = [get(r) for r in res]
            assert a["values"] == vals and a["seeds"] == [0, 1] and a["n"] == 2
            assert math.isclose(a["mean"], (vals[0] + vals[1]) / 2, abs_tol=1e-12)
            # n = 2: s = |x0 - x1| / sqrt(2), t_{0.975,1} = 12.706205, h = t * s / sqrt(2) = 12.706205 * |x0 - x1| / 2
            assert math.isclose(a["half_width"], 12.706205 * abs(vals[0] - vals[1]) / 2, abs_tol=1e-5)
            checked += 1
    assert checked >= 3 * 6
    assert math.isclose(agg["models"]["dpo"]["internal/hybrid_accuracy"]["mean"],
                        sum(r["internal"]["dpo"]["hybrid_accuracy"] for r in res) / 2, abs_tol=1e-12)
    md = (out / "seeds.md").read_text()
    assert "over n = 2 seeds (0, 1)" in md and "| model | accuracy | mean reward |" in md
    acc = agg["models"]["dpo"]["accuracy"]
    assert f"| dpo | {acc['mean']:.3f} ± {acc['half_width']:.3f} |" in md, md
    assert (out / "seeds.png").stat().st_size > 10_000 and (out / "seeds.pdf").exists()
    assert set(agg["wall_seconds"]) == {"0", "1"} and agg["reuse_sources"] is True
    base = __import__("yaml").safe_load((out / "config.yaml").read_text())   # the one config every seed started from
    assert base["pipeline"]["seeds"] == [0, 1] and base["pipeline"]["prompts"]["kwargs"]["n"] == 360

def test_paired_differences_and_the_sweep_figure(seeds_run):
    """seeds.json's paired differences are the per-seed differences of the seeds' own results; the alpha-sweep figure
    notebook reads a multi-seed directory (its seeds' results, the mean and the t-interval)."""
    out, _ = seeds_run
    agg = json.loads((out / "seeds.json").read_text())
    res = [json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    acc = lambda r, m: r["models"][m]["overall"]["accuracy"]
    assert list(agg["differences"]) == ["target_sft - target", "dpo - target_sft"]      # the default pairs of these models
    d = agg["differences"]["dpo - target_sft"]["accuracy"]
    vals = [acc(r, "dpo") - acc(r, "target_sft") for r in res]
    assert d["seeds"] == [0, 1] and all(math.isclose(a, b, abs_tol=1e-12) for a, b in zip(d["values"], vals))
    assert math.isclose(d["half_width"], 12.706205 * abs(vals[0] - vals[1]) / 2, abs_tol=1e-5)
    assert "| difference | accuracy | mean reward |" in (out / "seeds.md").read_text()
    figs = out / "figs"
    r = subprocess.run(WRPO + ["figures", str(out / "seed-0"), "--sweep", str(out), "--out", str(figs)], env=ENV,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (figs / "alpha_sweep.png").stat().st_size > 10_000, r.stdout
    nb = json.loads((out / "seed-0" / "notebooks" / "fig_alpha_sweep.ipynb").read_text())   # the executed figure notebook
    text = "".join(t for c in nb["cells"] for o in c.get("outputs", []) for t in o.get("text", []))
    assert "wrote" in text and "no sweep results" not in text, text

def test_a_missing_or_changed_seed_is_named(seeds_run, capsys):
    from wrpo.cli import main          # in this process: aggregating runs nothing
    out, _ = seeds_run
    stages = {s: (out / f"seed-{s}" / "stages.json").read_text() for s in (0, 1)}
    agg_only = lambda *extra, trim=TRIM: main(["seeds", CI, "--out", str(out), "--aggregate-only", "--quiet", *extra, *trim])
    assert agg_only("--seeds", "0,1,2") == 1
    assert f"{out.resolve() / 'seed-2'}: no such directory (the seed was not run)" in capsys.readouterr().err
    assert not (out / "seeds.json").exists()                                      # no summary the seed directories do not support
    assert agg_only("--seeds", "0,1,2", "--allow-missing") == 0
    agg = json.loads((out / "seeds.json").read_text())
    assert agg["aggregated"] == [0, 1] and list(agg["missing"]) == ["2"] and "Not aggregated: seed 2" in (out / "seeds.md").read_text()
    assert agg_only("--seeds", "0,1", trim=TRIM[:-2]) == 1                         # other eval.models than the seeds were run with
    assert "seed-0: made with other settings (eval.models" in capsys.readouterr().err
    assert all((out / f"seed-{s}" / "stages.json").read_text() == stages[s] for s in (0, 1))   # aggregating touched no run
