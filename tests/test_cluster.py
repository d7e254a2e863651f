"""Two "nodes" as two processes on this machine: the multi-node `accelerate launch` command that `wrpo.training.launch_command`
renders from SLURM's variables (node rank 0 and 1, main process 127.0.0.1, one process each) runs the shipped DeepSpeed ZeRO-3
config on CPU (gloo) and trains exactly as the single-machine 2-process launch does (tests/zero3_train.py's WRPO steps)."""
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
