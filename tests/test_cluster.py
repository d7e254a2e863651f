"""Two "nodes" as two processes on this machine: the multi-node `accelerate launch` command that `wrpo.training.launch_command`
renders from SLURM's variables (node rank 0 and 1, main process 127.0.0.1, one process each) runs the shipped DeepSpeed ZeRO-3
config on CPU (gloo) and trains exactly as the single-machine 2-process launch does (tests/zero3_train.py's WRPO steps); the rendered
SLURM recipes run with stand-ins for sbatch and srun: the sharded build gives the data one `wrpo build` gives, and the
multi-node training job (srun per node, the run lock, `wrpo train-variant`) trains a variant as one machine does."""
import json, os, socket, subprocess, sys
from pathlib import Path
import pytest

pytestmark = pytest.mark.slow   # the full tier only (scripts/test.sh); --fast deselects it

pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install 'wrpo[deepspeed]')")
from wrpo.config import LauncherSpec
from wrpo.training import launch_command

HERE = Path(__file__).parent
ZERO3 = HERE.parent / "configs" / "accelerate" / "deepspeed_zero3.yaml"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
ENV.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
FIXTURE = {k: v for k, v in json.loads((HERE / "fixtures" / "slurm_2x8.json").read_text()).items() if not k.startswith("_")}

def _free_port():
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def _script(cmd, out):
    "A rendered `... -m wrpo.cli ARGS` command with tests/zero3_train.py (WRPO, 2 rows per device) in place of the wrpo command"
    i = cmd.index("-m", 3)
    test_args = [str(HERE / "zero3_train.py"), str(out), "2", "wrpo"]
    assert cmd[i + 1] == "wrpo.cli", cmd
    return cmd[:i] + test_args

def _node_env(rank, port):
    "The fixture's SLURM variables for a 2-node step with one GPU per node, this node being `rank`; the main process on this machine"
    return {**FIXTURE, "SLURM_GPUS_ON_NODE": "1", "SLURM_GPUS_PER_NODE": "1", "SLURM_NODEID": str(rank), "SLURM_PROCID": str(rank),
            "SLURMD_NODENAME": ["gpu07", "gpu08"][rank], "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}

def _steps(out):
    res = json.loads((out / "result.json").read_text())
    return res, [h for h in res["log"] if "loss" in h]

def test_two_nodes_train_as_one_machine_with_two_processes(tmp_path):
    spec = LauncherSpec(str(ZERO3), mixed_precision="no")
    # the single-machine reference: 2 processes on one machine
    one = tmp_path / "one"; one.mkdir()
    ref = _script(launch_command(LauncherSpec(str(ZERO3), num_processes=2, mixed_precision="no"), "train-variant", "r", "v", env={}), one)
    assert "--num_machines" not in ref
    r = subprocess.run(ref, env=ENV, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    # two "nodes": the same command rendered under each node's SLURM variables, started side by side
    two = tmp_path / "two"; two.mkdir()
    for attempt in range(2):   # one retry for gloo's sporadic C++ abort on CPU only (see tests/test_distributed.py)
        port = _free_port()
        cmds = [_script(launch_command(spec, "train-variant", "r", "v", env=_node_env(k, port)), two) for k in (0, 1)]
        for k, c in enumerate(cmds):
            assert c[c.index("--num_machines"):c.index("--num_processes") + 2] == ["--num_machines", "2", "--machine_rank", str(k),
                   "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--num_processes", "2"], c
        procs = [subprocess.Popen(c, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
        outs = [p.communicate(timeout=1200) for p in procs]
        if all(p.returncode == 0 for p in procs) or not any("terminate called without an active exception" in e for _, e in outs): break
    for p, (o, e) in zip(procs, outs): assert p.returncode == 0, o[-2000:] + e[-4000:]
    (a_res, a), (b_res, b) = _steps(one), _steps(two)
    assert (a_res["world_size"], a_res["deepspeed"], b_res["world_size"], b_res["deepspeed"]) == (2, True, 2, True)
    assert [h["step"] for h in a] == [h["step"] for h in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6)
        assert x["alpha"] == pytest.approx(y["alpha"], abs=1e-12)
    assert a[-1]["loss"] < a[0]["loss"] - 0.05   # it really trained

# a stand-in for sbatch that runs each submission at once, every array task in turn with its SLURM_ARRAY_TASK_ID, and
# fails as sbatch --dependency=afterok would leave the next jobs waiting: any failing task stops the recipe
FAKE_SBATCH = """#!{python}
import os, subprocess, sys
opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
lo, hi = map(int, opts["array"].split("-")) if "array" in opts else (0, 0)
n = len(os.listdir(os.environ["FAKE_SLURM_DIR"]))
for i in range(lo, hi + 1):
    env = {{**os.environ, "SLURM_JOB_ID": str(100 + n)}} | ({{"SLURM_ARRAY_TASK_ID": str(i)}} if "array" in opts else {{}})
    r = subprocess.run(["sh", "-c", opts["wrap"]], env=env, capture_output=True, text=True)
    if r.returncode: sys.exit(f"job {{opts['job-name']}} task {{i}} failed: {{r.stderr[-3000:]}}")
open(os.path.join(os.environ["FAKE_SLURM_DIR"], str(100 + n)), "w").write(repr(opts))
print(f"{{100 + n}};cluster1")
"""

def test_build_recipe_jobs_build_what_one_process_builds(tmp_path):
    "The rendered data-build recipe, its jobs run by a stand-in sbatch with the real `wrpo build`, gives the quadruples one `wrpo build` gives"
    import yaml
    from datasets import load_from_disk
    from wrpo.cluster import slurm_build_script
    from wrpo.config import config_path
    from wrpo.toyworld import build_zoo, make_prompts
    d = yaml.safe_load(config_path("ci").read_text())          # ci with its provided models as paths (`wrpo build` takes no provider)
    zoo = build_zoo(**d["pipeline"]["models"]["kwargs"])
    for m in d["sources"] + [d["target"]]: m["model"] = zoo[m["model"].split(":", 1)[1]]
    del d["pipeline"]["models"]
    (tmp_path / "ci.yaml").write_text(yaml.safe_dump(d))
    rows = make_prompts(skill_mix={"add": 0.3, "reverse": 0.3, "sort": 0.3, "max": 0.1}, n=100, seed=0)   # 100 prompts: 2 shards of 64
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    wrpo = f"{sys.executable} -m wrpo.cli"
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(HERE.parent), ENV.get("PYTHONPATH", "")])}
    r = subprocess.run(f"{wrpo} build ci.yaml --prompts p.jsonl --out one --stage all --target-model {zoo['target_mistral']}", shell=True,
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-4000:]
    bin_ = tmp_path / "bin"; bin_.mkdir(); (tmp_path / "jobs").mkdir()
    (bin_ / "sbatch").write_text(FAKE_SBATCH.format(python=sys.executable)); (bin_ / "sbatch").chmod(0o755)
    script = slurm_build_script("ci.yaml", "sharded", shards=2, prompts="p.jsonl", target_model=zoo["target_mistral"], target_shards=2, wrpo=wrpo)
    (tmp_path / "build.sh").write_text(script)
    r = subprocess.run(["bash", "build.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=1800,
                       env={**env, "PATH": f"{bin_}{os.pathsep}{env['PATH']}", "FAKE_SLURM_DIR": str(tmp_path / "jobs")})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.strip() == "submitted: sources 100 (array), sft 101, targets 102 (array), merge 103"
    assert sorted((tmp_path / "sharded" / "scored").glob("shard-*.jsonl")) and len(list((tmp_path / "sharded" / "scored").glob("shard-*.jsonl"))) == 2
    for part in ("sft", "quadruples"):
        a, b = load_from_disk(str(tmp_path / "one" / part)).to_list(), load_from_disk(str(tmp_path / "sharded" / part)).to_list()
        assert len(a) > 10 and a == b, part

FAKE_SRUN = """#!{python}
# a stand-in for srun over two "nodes" on this machine: the command once per node, side by side, with that node's variables
import json, os, subprocess, sys
args = [a for a in sys.argv[1:] if not a.startswith("--")]
envs = json.loads(os.environ["FAKE_NODE_ENVS"])
procs = [subprocess.Popen(args, env={{**os.environ, **e}}) for e in envs]
sys.exit(max(p.wait() for p in procs))
"""

def test_training_recipe_trains_a_variant_on_two_nodes_as_on_one_machine(tmp_path):
    "The rendered multi-node recipe (srun per node -> launch_command -> accelerate -> wrpo train-variant) on two 'nodes' trains as 2 processes on one machine"
    from wrpo.cluster import slurm_train_script
    from wrpo.pipeline import Run
    from wrpo.rundir import LOCK_ENV
    from wrpo.testing import paper_mini
    cfg = paper_mini(tmp_path / "mini")
    cfg["train"]["variants"] = {"dpo": cfg["train"]["variants"]["dpo"]}
    cfg["train"]["launcher"]["mixed_precision"] = "no"
    run_dir = tmp_path / "run"
    old = {k: os.environ.pop(k) for k in [k for k in os.environ if k.startswith("SLURM")] + ["OMP_NUM_THREADS"] if k in os.environ}
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        run = Run(cfg, run_dir)
        for s in ("models", "sources", "sft", "targets", "split"): run.stage(s)
        run.lock.release()
    finally:
        os.environ.pop("OMP_NUM_THREADS"); os.environ.update(old)
    env = {k: v for k, v in ENV.items() if k != LOCK_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), ENV.get("PYTHONPATH", "")])
    # the single-machine reference, as `wrpo run` launches it: the run lock held for the trainers (LOCK_ENV)
    one = subprocess.run(launch_command(run.cfg.train.launcher, "train-variant", run.dir, "dpo", env={}), env={**env, LOCK_ENV: str(run.dir)},
                         capture_output=True, text=True, timeout=1200)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-6000:]
    ref = json.loads((run.dir / "logs" / "dpo.json").read_text())
    for d in ("checkpoints/dpo", "models/dpo", "logs/dpo.json"):
        p = run.dir / d
        subprocess.run(["rm", "-rf", str(p)], check=True)
    bin_ = tmp_path / "bin"; bin_.mkdir()
    (bin_ / "srun").write_text(FAKE_SRUN.format(python=sys.executable)); (bin_ / "srun").chmod(0o755)
    (tmp_path / "train.sbatch").write_text(slurm_train_script(cfg, run.dir, nodes=2, gpus_per_node=1, steps=["dpo"], python=sys.executable))
    port = _free_port()
    r = subprocess.run(["bash", str(tmp_path / "train.sbatch")], capture_output=True, text=True, timeout=1200,
                       env={**env, "PATH": f"{bin_}{os.pathsep}{env['PATH']}", "FAKE_NODE_ENVS": json.dumps([_node_env(k, port) for k in (0, 1)])})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    two = json.loads((run.dir / "logs" / "dpo.json").read_text())
    a, b = [h for h in ref if "loss" in h], [h for h in two if "loss" in h]
    assert len(a) == len(b) >= 2
    for x, y in zip(a, b): assert x["loss"] == pytest.approx(y["loss"], abs=1e-5), (a, b)
    assert (run.dir / "models" / "dpo").is_dir()
