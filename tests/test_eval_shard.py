"""`wrpo eval --shard i/n`: jobs that answer side by side into one run directory, then one `wrpo eval` that merges, judges
and scores. Real processes on this machine (tiny local checkpoints, the benchmark fixtures of wrpo.testing, the labelled
FAKE protocol judge of wrpo.testing on 127.0.0.1): two shard jobs give the answers and scores one process gives, ask
the judge nothing, and a job killed mid-way resumes on its rerun without answering anything twice."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest, yaml

from conftest import ENV, WRPO
from wrpo.files import read_jsonl
from wrpo.testing import ProtocolJudge, benchmark_fixtures, tiny_lm, tiny_tokenizer

pytestmark = pytest.mark.slow   # papermill kernels: about a minute in all
NAMES, N_Q = ["mt_bench", "alpaca_eval"], 3   # MT-Bench samples its writing and roleplay questions: answers depend on the chunks
N_UNITS = len(NAMES) * 2 * N_Q                 # 2 models, chunks of one question


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    "A config with two tiny models and a judge, and the evaluation of one unsharded `wrpo eval` process (the reference)"
    work = tmp_path_factory.mktemp("eval-shard")
    tok = tiny_tokenizer("char")
    tiny_lm(tok, "llama", d=64, path=work / "target"); tiny_lm(tok, "gpt2", d=64, seed=1, path=work / "other")
    cfg = {"name": "shard", "target": {"name": "t", "model": str(work / "target"), "device": "cpu"}, "train": {"variants": {"wrpo": {}}},
           "benchmarks": {"names": NAMES, "models": ["target"], "data_dir": str(benchmark_fixtures(work / "data", n=N_Q)),
                          "max_new_tokens": 24, "answer_chunk": 1, "bootstrap_rounds": 10,
                          "judge": {"name": "j", "backend": "openai", "endpoint": "http://127.0.0.1:9/v1", "model": "fake-judge"}}}
    (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    with ProtocolJudge() as judge:
        r = subprocess.run(cmd(work, judge, "one"), cwd=work, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return work


def cmd(work, judge, out, *extra):
    return [*WRPO, "eval", str(work / "cfg.yaml"), "--out", str(work / out), "--quiet", "--model", f"other={work / 'other'}",
            "-o", f"benchmarks.judge.endpoint={judge.url}", *extra]


def answers(run):
    "Per benchmark and model: the answer file's rows without the per-row id and time of writing (fresh in every run)"
    b = Path(run) / "benchmarks"
    out = {("alpaca_eval", m): json.loads((b / "alpaca_eval" / m / "model_outputs.json").read_text()) for m in ("target", "other")}
    for m in ("target", "other"):
        out[("mt_bench", m)] = [{k: v for k, v in r.items() if k not in ("answer_id", "tstamp")}
                                for r in read_jsonl(b / "mt_bench" / "model_answer" / f"{m}.jsonl")]
    return out


def scores(run): return json.loads((Path(run) / "benchmarks" / "scores.json").read_text())["scores"]


def test_two_shard_processes_give_what_one_process_gives(setup):
    work = setup
    with ProtocolJudge() as judge:
        jobs = [subprocess.Popen(cmd(work, judge, "two", "--shard", f"{i}/2"), cwd=work, env=ENV, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for i in range(2)]
        outs = [p.communicate(timeout=600) for p in jobs]
        assert [p.returncode for p in jobs] == [0, 0], [o[1][-3000:] for o in outs]
        assert judge.requests == []   # a shard job asks the configured judge nothing, not even the 1-token check
        parts = sorted((work / "two" / "benchmarks" / "answer_parts").rglob("part-*.jsonl"))
        assert len(parts) == N_UNITS and not (work / "two" / "benchmarks" / "scores.json").exists()
        assert "shard 1/2 of the benchmark answers of shard finished" in outs[1][0]
        rec = json.loads((work / "two" / "stages.json").read_text())   # both jobs' records survive, none marked done
        assert {k: v["done"] for k, v in rec.items()} == {f"bench/{b}/{m}": False for b in NAMES for m in ("target", "other")}
        r = subprocess.run(cmd(work, judge, "two"), cwd=work, env=ENV, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got, want = answers(work / "two"), answers(work / "one")
    assert got == want
    b = work / "two" / "benchmarks"   # AlpacaEval's file has no ids or times: byte for byte
    for m in ("target", "other"):
        assert (b / "alpaca_eval" / m / "model_outputs.json").read_bytes() == (work / "one" / "benchmarks" / "alpaca_eval" / m / "model_outputs.json").read_bytes()
    assert scores(work / "two") == scores(work / "one")
    assert not (b / "answer_parts" / "mt_bench" / "target").exists()   # merged, then removed
    assert all(v["done"] for v in json.loads((work / "two" / "stages.json").read_text()).values())


def test_killed_shard_resumes_without_duplicates(setup):
    work = setup
    parts_root = work / "kill" / "benchmarks" / "answer_parts"
    with ProtocolJudge() as judge:
        p = subprocess.Popen(cmd(work, judge, "kill", "--shard", "0/1"), cwd=work, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)   # its own process group: the notebook kernel dies with it
        t0 = time.time()
        while not list(parts_root.rglob("part-*.jsonl")) and time.time() - t0 < 300 and p.poll() is None: time.sleep(0.01)
        assert p.poll() is None, f"the shard job ended (exit {p.returncode}) before it was killed"
        os.killpg(p.pid, signal.SIGKILL); p.wait()
        before = {f: f.stat().st_mtime_ns for f in parts_root.rglob("part-*.jsonl")}
        assert 0 < len(before) < N_UNITS, f"{len(before)} of {N_UNITS} parts when killed: not mid-way"
        r = subprocess.run(cmd(work, judge, "kill", "--shard", "0/1"), cwd=work, env=ENV, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        after = {f: f.stat().st_mtime_ns for f in parts_root.rglob("part-*.jsonl")}
        assert len(after) == N_UNITS and all(after[f] == t for f, t in before.items())   # what the killed job wrote is kept, not redone
        assert not [f for f in parts_root.rglob("*") if f.is_file() and not f.name.startswith("part-")]   # no half-written file left
        assert judge.requests == []
        r = subprocess.run(cmd(work, judge, "kill"), cwd=work, env=ENV, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got = answers(work / "kill")
    for m in ("target", "other"):   # every question answered exactly once, in question order
        assert [r["question_id"] for r in got[("mt_bench", m)]] == [81, 82, 83]
        assert len(got[("alpaca_eval", m)]) == N_Q
    assert got == answers(work / "one") and scores(work / "kill") == scores(work / "one")


def test_workers_answer_data_parallel_then_judge(setup):
    "benchmarks.workers=2: one `wrpo eval` runs two shard jobs side by side (on a CPU: no GPU pinning), then merges, judges, scores"
    work = setup
    with ProtocolJudge() as judge:
        r = subprocess.run(cmd(work, judge, "workers", "-o", "benchmarks.workers=2"), cwd=work, env=ENV, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "answering with 2 jobs (CUDA_VISIBLE_DEVICES [None, None])" in r.stdout, r.stdout[-2000:]
    logs = sorted(p.name for p in (work / "workers" / "logs").glob("eval-shard-*.log"))
    assert logs == ["eval-shard-0-of-2.log", "eval-shard-1-of-2.log"]
    assert (work / "workers" / "notebooks" / "eval-shard-1-of-2.ipynb").exists() and (work / "workers" / "notebooks" / "eval.ipynb").exists()
    assert answers(work / "workers") == answers(work / "one") and scores(work / "workers") == scores(work / "one")
