"""The data builder under fire: a real build process killed (SIGKILL) at several points, then resumed, must give
exactly the data of an uninterrupted build; plus the `wrpo build` entry function with --shard i/n and a merge."""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import datasets
import pytest

pytestmark = pytest.mark.slow   # the full tier only (scripts/test.sh); --fast deselects it
import yaml

from wrpo.cli import main as wrpo_main
def build_main(argv): return wrpo_main(["build", *argv])   # `wrpo build ...` through the one CLI parser
from wrpo.testing import tiny_lm, tiny_tokenizer

from conftest import ROOT
VERIFIER = textwrap.dedent('''
    def overlap(prompts, responses):
        "Graded toy verifier: share of the prompt's characters that the response uses"
        def text(p): return p if isinstance(p, str) else "\\n".join(m["content"] for m in p)
        return [len(set(text(p)) & set(r)) / len(set(text(p))) for p, r in zip(prompts, responses)]
''')


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py: tiny models, one torch thread


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    "Two heterogeneous tiny sources, a target, a verifier module, a config and prompts, all on disk"
    T = tmp_path_factory.mktemp("build")
    tiny_lm(tiny_tokenizer("char"), "gpt2", seed=1, path=T / "gpt2")
    tiny_lm(tiny_tokenizer("bpe"), "llama", seed=2, path=T / "llama")
    tiny_lm(tiny_tokenizer("char"), "llama", seed=3, path=T / "target")
    (T / "wrpo_resume_verifier.py").write_text(VERIFIER)
    cfg = dict(name="resume-test",
               sources=[dict(name="gpt2", model=str(T / "gpt2"), max_new_tokens=16, device="cpu", batch_size=4),
                        dict(name="llama", model=str(T / "llama"), max_new_tokens=16, device="cpu", temperature=1.0)],
               target=dict(name="target", model=str(T / "target"), max_new_tokens=16, device="cpu"),
               reward=dict(kind="callable", path="wrpo_resume_verifier:overlap"),
               # truncated="keep": random models seldom end their turn within their few tokens, and these tests are about
               # killed and sharded builds (05_build tests the truncation policies)
               build=dict(n=3, shard_size=3, seed=7, tie_policy="keep_flagged", jsonl=True, keep_columns=["skill"], truncated="keep"))
    (T / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    rows = [{"prompt": f"sort {i % 10} {(3 * i) % 7} {i}", "skill": ["sort", "add", "count"][i % 3]} for i in range(36)]
    (T / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return T


def _cmd(T, out, *extra):
    code = ("import sys; from wrpo.cli import main; "
            f"sys.exit(main(['build', {str(T / 'cfg.yaml')!r}, '--prompts', {str(T / 'prompts.jsonl')!r}, "
            f"'--out', {str(out)!r}, '--target-model', {str(T / 'target')!r}, *{list(extra)!r}]))")
    env = dict(os.environ, PYTHONPATH=f"{T}{os.pathsep}{ROOT}", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1")
    return [sys.executable, "-c", code], env


def _run(T, out):
    cmd, env = _cmd(T, out)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def _kill_when(T, out, ready, timeout=120):
    "Start a build; SIGKILL it as soon as `ready(out)` holds; True if it was killed mid-way"
    cmd, env = _cmd(T, out)
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    try:
        while time.time() - t0 < timeout and p.poll() is None:
            if ready(out): p.send_signal(signal.SIGKILL); p.wait(30); return True
            time.sleep(0.01)
        return False
    finally:
        if p.poll() is None: p.kill(); p.wait(30)


def _snapshot(out):
    "Everything a finished build produced, in comparable form"
    q = datasets.load_from_disk(str(out / "quadruples")).to_list()
    sft = datasets.load_from_disk(str(out / "sft")).to_list()
    files = {f.relative_to(out).as_posix(): f.read_text() for f in sorted(out.rglob("*.jsonl")) if not f.name.startswith(".")}
    return q, sft, files, json.loads((out / "stats.json").read_text()), json.loads((out / "split.json").read_text())


def _n(out, pattern): return len(list(out.glob(pattern)))


def test_kill_and_resume_gives_the_uninterrupted_data(world):
    T = world
    _run(T, T / "ref")
    ref = _snapshot(T / "ref")
    q, sft, files, stats, split = ref
    assert len(split["sft"]) == 12 and len(split["pref"]) == 24
    assert stats["pref_prompts"] == 24 and len(q) + stats["dropped"] == 24 and len(q) > 0
    counts = json.loads((T / "ref/source_contribution.json").read_text())
    assert sum(v["count"] for v in counts.values()) == 36 - json.loads((T / "ref/sft_stats.json").read_text())["no_source_response"]
    assert set(json.loads(q[0]["all_source_scores"])) == {"gpt2", "llama"}

    out = T / "run"
    # kill points: inside the first source, between sources, while scoring, inside the target stage, during the merge
    points = [lambda o: _n(o, "samples/gpt2/shard-*.jsonl") >= 2,
              lambda o: _n(o, "samples/llama/shard-*.jsonl") >= 1,
              lambda o: _n(o, "scored/shard-*.jsonl") >= 5,
              lambda o: _n(o, "target_samples/shard-*.jsonl") >= 3,
              lambda o: _n(o, "targets/shard-*.jsonl") >= 1]
    killed = [_kill_when(T, out, ready) for ready in points]
    assert sum(killed) >= 3, killed  # most kills land mid-build (a fast machine may finish a stage first)
    assert not (out / "quadruples").exists() or killed[-1] is False
    _run(T, out)
    got = _snapshot(out)
    assert got[0] == q, "quadruples differ from the uninterrupted build"
    assert got[1] == sft and got[2] == files and got[3] == stats and got[4] == split
    leftovers = [f for f in out.rglob(".tmp-*")]
    assert leftovers == [], leftovers  # temp files of killed writers were cleaned when their shard was redone
    from wrpo.data import load_quadruples
    assert len(load_quadruples(str(out / "quadruples.jsonl"))) == len(q)


def test_cli_shards_and_merge(world, monkeypatch, capsys):
    T = world
    monkeypatch.syspath_prepend(str(T))
    base = [str(T / "cfg.yaml"), "-o", "build.tie_policy=drop", "-o", "build.shard_size=5"]
    for i in range(3):
        assert build_main(base + ["--stage", "sources", "--prompts", str(T / "prompts.jsonl"), "--out", str(T / f"s{i}"), "--shard", f"{i}/3"]) == 0
    assert build_main(base + ["--stage", "sft", "--out", str(T / "s0")]) == 2     # one line on stderr, not a traceback
    assert "scored is incomplete" in capsys.readouterr().err
    assert build_main(base + ["--stage", "sft", "--out", str(T / "s0"), "--merge-from", str(T / "s1"), str(T / "s2")]) == 0
    for i in range(3):
        assert build_main(base + ["--stage", "targets", "--out", str(T / f"s{i}"), "--shard", f"{i}/3",
                                  "--target-model", str(T / "target"), "--merge-from", str(T / "s0")]) == 0
    assert build_main(base + ["--stage", "merge", "--out", str(T / "s0")]) == 2
    assert "targets is incomplete" in capsys.readouterr().err
    assert build_main(base + ["--stage", "merge", "--out", str(T / "s0"), "--merge-from", str(T / "s1"), str(T / "s2")]) == 0
    # the same build unsharded, in one process
    assert build_main(base + ["--prompts", str(T / "prompts.jsonl"), "--out", str(T / "one"), "--target-model", str(T / "target")]) == 0
    a = datasets.load_from_disk(str(T / "s0/quadruples")).to_list()
    b = datasets.load_from_disk(str(T / "one/quadruples")).to_list()
    assert a == b and len(a) > 0
    assert all(r["flag"] == "" for r in a)  # tie_policy=drop
    st = json.loads((T / "s0/stats.json").read_text())
    assert st["rows"] == len(a) and st["dropped"] == sum(v for k, v in st["status_counts"].items() if k != "ok")
    ids = [r["source_id"] for r in a]
    tab = json.loads((T / "s0/quadruple_source_contribution.json").read_text())
    assert {k: v["count"] for k, v in tab.items()} == {s: ids.count(s) for s in ("gpt2", "llama")}


def _ref(T):
    "The uninterrupted one-process build of the world (built once per module)"
    if not (T / "ref" / "stats.json").exists(): _run(T, T / "ref")
    return _snapshot(T / "ref")


def _claims(out):
    "shard lock file -> its audit trail [(claimed|written, pid), ...]"
    from wrpo.workers import claim_log
    return {f.name: claim_log(f) for f in sorted((out / ".workers" / "claims").glob("*.lock"))}


def test_two_workers_write_the_bytes_one_process_writes(world):
    "build.workers: 2 on this CPU: every stage in two worker processes (half the threads each), the same data to the byte"
    T = world
    ref = _ref(T)
    cmd, env = _cmd(T, T / "w2", "-o", "build.workers=2")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _snapshot(T / "w2") == ref
    logs = _claims(T / "w2")
    stages = ("samples-gpt2", "samples-llama", "scored", "target_samples", "targets")
    assert {k.rsplit("-", 1)[0] for k in logs} == set(stages)
    assert all([w for w, _ in l] == ["claimed", "written"] for l in logs.values()), logs   # every shard written once
    for s in stages:   # two workers per stage (new processes per stage), both wrote shards of the larger stages
        pids = {l[1][1] for k, l in logs.items() if k.rsplit("-", 1)[0] == s}
        assert 1 <= len(pids) <= 2
        assert len(sorted((T / "w2/.workers/logs").glob(f"{s}-w*.log"))) == 2
    assert len({l[1][1] for l in logs.values()}) >= 6   # 5 stages x 2 workers: most wrote something


def test_a_killed_worker_loses_and_duplicates_nothing(world):
    "SIGKILL one of two workers while it holds a shard: the other takes the shard over, the build finishes with the same data"
    T = world
    ref = _ref(T)
    out = T / "wkill"
    cmd, env = _cmd(T, out, "-o", "build.workers=2")
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = shard = None
    t0 = time.time()
    try:
        while victim is None and p.poll() is None and time.time() - t0 < 300:
            for name, log in _claims(out).items() if (out / ".workers" / "claims").exists() else ():
                if log and log[-1][0] == "claimed" and log[-1][1] != p.pid and name.startswith("samples-llama"):
                    victim, shard = log[-1][1], name
                    os.kill(victim, signal.SIGKILL); break
            time.sleep(0.005)
        _, err = p.communicate(timeout=600)
    finally:
        if p.poll() is None: p.kill()
    assert victim is not None, "no worker was caught holding a shard"
    assert p.returncode == 0, err[-3000:]
    assert f"was killed by signal 9" in err and f"PID {victim}" in err   # said, not silent
    assert _snapshot(out) == ref                                           # nothing lost, nothing changed
    log = _claims(out)[shard]
    assert log[0] == ("claimed", victim) and [w for w, _ in log] == ["claimed", "claimed", "written"], log   # taken over
    assert log[2][1] != victim
    assert all([w for w, _ in l].count("written") == 1 for l in _claims(out).values())   # no shard written twice
