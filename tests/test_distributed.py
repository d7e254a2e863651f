"""Data-parallel WRPO on 2 CPU processes (gloo, through torchrun) matches 1 process with the same global batch."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

pytestmark = pytest.mark.slow   # the full tier only (scripts/test.sh); --fast deselects it

HERE = Path(__file__).parent
from conftest import ROOT

def _run(tmp, nproc, per_device, launcher="torchrun"):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    out = tmp / f"p{nproc}-{launcher}"; out.mkdir()
    if nproc == 1: cmd = [sys.executable]
    elif launcher == "torchrun": cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    else: cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "configs/accelerate/ddp_cpu_2proc.yaml")]
    for attempt in range(2):
        r = subprocess.run(cmd + [str(HERE / "ddp_train.py"), str(out), str(per_device)], env=env, capture_output=True, text=True, timeout=600)
        # gloo on CPU now and then aborts a rank from a C++ thread ("terminate called without an active exception", seen
        # about once in 10 runs, before and after any change of ours): one retry for exactly that, any other failure fails
        if r.returncode == 0 or "terminate called without an active exception" not in r.stderr: break
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads((out / "result.json").read_text())

def test_two_processes_match_one(tmp_path):
    one, two = _run(tmp_path, 1, 4), _run(tmp_path, 2, 2)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    l1 = [h for h in one["log"] if "loss" in h]; l2 = [h for h in two["log"] if "loss" in h]
    assert len(l1) == len(l2) == 4
    for a, b in zip(l1, l2):
        assert a["alpha"] == pytest.approx(b["alpha"], abs=1e-12)
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)
        assert a["margins/weighted"] == pytest.approx(b["margins/weighted"], abs=1e-4)
    assert l1[-1]["alpha"] == pytest.approx(0.5)
    assert l1[-1]["loss"] != pytest.approx(l1[0]["loss"], abs=1e-6)      # it really trained
    assert one["param"] == pytest.approx(two["param"], abs=1e-5)

def test_accelerate_launch_with_shipped_config(tmp_path):
    "The shipped `configs/accelerate/ddp_cpu_2proc.yaml` starts 2 real processes and gives the 1-process losses."
    one, two = _run(tmp_path, 1, 4), _run(tmp_path, 2, 2, launcher="accelerate")
    assert two["world_size"] == 2
    for a, b in zip([h for h in one["log"] if "loss" in h], [h for h in two["log"] if "loss" in h]):
        assert (a["alpha"], a["loss"]) == pytest.approx((b["alpha"], b["loss"]), abs=1e-4)
