"""wrpo.judge against a real model behind a real OpenAI-compatible server: `vllm serve` (the `vllm-cpu` build in
.venv-vllm, see scripts/vllm_env.sh) serving a tiny random Qwen2 checkpoint on 127.0.0.1.

    .venv-vllm/bin/python -m pytest -q -p no:cacheprovider tests/test_judge_vllm.py

Skipped where vLLM is not importable (the main .venv). The tiny model's verdicts are noise: what is checked is the
protocol plumbing with a real server (every judgment present, each parsed or counted as unparseable, none dropped, the
AlpacaEval preference read from the log-probabilities vLLM returns) and that the disk cache makes a rerun free.
The exact protocol checks (parsing, swapping, ties, retries) are in nbs/14_judge.ipynb against a labelled fake server.
Also here: a mistyped judge model fails the 1-token check in seconds with the server's own 404, and two real judges
(two tiny models, two servers) judge the same answers through `run_benchmarks`, whose agreement report is checked
against the two judges' official judgment files.
"""
import importlib.metadata, json, os, socket, subprocess, sys, time, urllib.request
import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
vllm = pytest.importorskip("vllm", reason="vLLM is not installed here: run with .venv-vllm/bin/python (bash scripts/vllm_env.sh)")
import psutil
from wrpo.config import ModelSpec
from wrpo.files import read_jsonl
from wrpo.judge import (JudgeClient, JudgeUnavailable, judge_alpaca_eval, judge_arena_hard, judge_mt_bench, ARENA_HARD_LABELS,
                        arena_hard_judgment_path, mt_bench_judgment_path, write_alpaca_annotations,
                        write_arena_hard_judgments, write_mt_bench_judgments)
from wrpo.testing import tiny_lm, tiny_tokenizer
sys.path.insert(0, os.path.dirname(__file__))
from vllm_serve import vllm_serve

MAX_LEN = 4096  # a character tokenizer: the Arena-Hard system prompt alone is ~1,700 tokens

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("judge")
    tok = tiny_tokenizer("char")  # every letter is one token: `m` and `M` can appear among the top log-probabilities
    m = tiny_lm(tok, "qwen2", d=128, layers=2, heads=2, seed=3, max_pos=MAX_LEN)
    m.save_pretrained(d / "ckpt"); tok.save_pretrained(d / "ckpt")
    with vllm_serve(d / "ckpt", "tiny-judge", d / "serve.log", max_model_len=MAX_LEN) as url:
        yield url, d

# fixtures in each benchmark's exact schema
ALPACA_MODEL = [dict(instruction="Name a fruit.", output="An apple.", generator="mine", dataset="helpful_base"),
                dict(instruction="What is 2+2?", output="4", generator="mine", dataset="koala"),
                dict(instruction="Say hi.", output="hi", generator="mine", dataset="oasst")]
ALPACA_BASE = [dict(instruction="Name a fruit.", output="A banana is a fruit.", generator="gpt4_1106_preview", dataset="helpful_base"),
               dict(instruction="What is 2+2?", output="2+2 equals 4.", generator="gpt4_1106_preview", dataset="koala"),
               dict(instruction="Say hi.", output="hi", generator="gpt4_1106_preview", dataset="oasst")]  # identical: 1.5, no request
def _ah_answer(qid, model, text):
    return dict(question_id=qid, answer_id=f"{model}-{qid}", model_id=model, tstamp=0.0,
                choices=[{"index": 0, "turns": [{"content": text, "token_len": len(text)}]}])
AH_Q = [dict(question_id="a1", category="arena-hard-v0.1", cluster="math", turns=[{"content": "What is 3*7?"}]),
        dict(question_id="a2", category="arena-hard-v0.1", cluster="poems", turns=[{"content": "A haiku on rain."}])]
AH_MINE = [_ah_answer("a1", "mine", "21"), _ah_answer("a2", "mine", "Rain taps the window")]
AH_BASE = [_ah_answer("a1", "gpt-4-0314", "3*7 = 21"), _ah_answer("a2", "gpt-4-0314", "Soft rain on the roof")]
MT_Q = [dict(question_id=81, category="writing", turns=["Write a line on the sea.", "Make it rhyme."]),
        dict(question_id=111, category="math", turns=["What is 5+6?", "And times 2?"], reference=["11", "22"])]
MT_A = [dict(question_id=81, answer_id="x81", model_id="mine", tstamp=0.0, choices=[{"index": 0, "turns": ["The sea is wide.", "The sea is wide, the sky is high."]}]),
        dict(question_id=111, answer_id="x111", model_id="mine", tstamp=0.0, choices=[{"index": 0, "turns": ["11", "22"]}])]

def _judge_all(url, cache):
    spec = ModelSpec(name="judge", backend="openai", endpoint=url, model="tiny-judge", max_concurrency=2, max_retries=1,
                     retry_backoff=0.5, timeout=120)
    jc = JudgeClient(spec, cache=cache, progress=False)
    a = judge_alpaca_eval(ALPACA_MODEL, ALPACA_BASE, jc)
    h = judge_arena_hard(AH_Q, AH_MINE, AH_BASE, jc, judge_name="tiny-judge", max_tokens=12)
    m = judge_mt_bench(MT_Q, MT_A, jc, judge_name="tiny-judge", max_tokens=12)
    return jc, a, h, m

@pytest.fixture(scope="module")
def runs(server):
    url, d = server
    t0 = time.perf_counter(); first = _judge_all(url, d / "cache.jsonl"); t1 = time.perf_counter()
    again = _judge_all(url, d / "cache.jsonl"); t2 = time.perf_counter()
    print(f"first run {t1 - t0:.1f} s, {first[0].stats}; rerun {t2 - t1:.2f} s, {again[0].stats}")
    return first, again, d

def _counts_add_up(s):
    assert s["errors"] == 0, s  # a real server answers every request
    assert s["parsed"] + s["unparseable"] + s["errors"] == s["n"], s

def test_alpaca_eval(runs):
    (_, (ann, s), _, _), _, d = runs
    assert [a["instruction"] for a in ann] == [r["instruction"] for r in ALPACA_MODEL] and s["n"] == 3
    _counts_add_up(s)
    assert ann[2]["preference"] == 1.5 and ann[2]["preference_source"] == "identical"
    for a in ann[:2]:  # vLLM returns log-probabilities: the official soft preference path is the one taken
        assert a["preference_source"] == "logprobs", a
        assert a["raw_completion"]["logprobs"]["content"][0]["top_logprobs"], a
        assert a["preference"] is None or 1.0 <= a["preference"] <= 2.0
    assert s["unparseable"] == sum(a["preference"] is None for a in ann)
    write_alpaca_annotations(d / "alpaca_eval" / "mine" / "annotations.json", ann)
    back = json.loads((d / "alpaca_eval" / "mine" / "annotations.json").read_text())
    assert [b["preference"] for b in back] == [a["preference"] for a in ann]

def test_arena_hard(runs):
    (_, _, (rows, s), _), _, d = runs
    assert [r["question_id"] for r in rows] == ["a1", "a2"] and all(len(r["games"]) == 2 for r in rows)
    _counts_add_up(s)
    scores = [g["score"] for r in rows for g in r["games"]]
    assert all(x is None or x in ARENA_HARD_LABELS for x in scores)
    assert s["unparseable"] == scores.count(None)
    assert all(g["judgment"] and g["user_prompt"] for r in rows for g in r["games"])
    p = arena_hard_judgment_path(d / "arena-hard-v0.1", "tiny-judge", "mine"); write_arena_hard_judgments(p, rows)
    assert read_jsonl(p) == rows

def test_mt_bench(runs):
    (_, _, _, (rows, s)), _, d = runs
    assert [(r["question_id"], r["turn"]) for r in rows] == [(81, 1), (81, 2), (111, 1), (111, 2)]
    _counts_add_up(s)
    assert all(r["score"] == -1 or isinstance(r["score"], (int, float)) for r in rows)
    assert s["unparseable"] == sum(r["score"] == -1 for r in rows)
    assert [r["judge"][1] for r in rows] == ["single-v1", "single-v1-multi-turn", "single-math-v1", "single-math-v1-multi-turn"]
    p = mt_bench_judgment_path(d / "mt_bench", "tiny-judge"); write_mt_bench_judgments(p, rows)
    assert len(read_jsonl(p)) == 4

def test_rerun_is_free(runs):
    (jc1, a1, h1, m1), (jc2, a2, h2, m2), _ = runs
    assert jc1.stats["requests"] >= 2 + 4 + 4 and jc1.stats["completion_tokens"] > 0
    assert jc2.stats["requests"] == 0 and jc2.stats["cache_hits"] == jc1.stats["requests"], (jc1.stats, jc2.stats)
    assert a2[0] == a1[0] and h2[0] == h1[0]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "tstamp"} for r in rows]
    assert strip(m2[0]) == strip(m1[0])

def test_unknown_model_fails_in_seconds(server):
    """A mistyped judge model: the real server answers 404, and the check says so (with the served name) within seconds,
    whatever the configured retries and back-off."""
    url, _ = server
    spec = ModelSpec(name="judge", backend="openai", endpoint=url, model="tiny-judgee", max_retries=5, retry_backoff=2.0, timeout=120)
    t0 = time.perf_counter()
    with pytest.raises(JudgeUnavailable) as e: JudgeClient(spec, progress=False).check()
    dt, msg = time.perf_counter() - t0, str(e.value)
    assert "HTTP 404" in msg and "tiny-judgee" in msg and "e.g. 'tiny-judge'" in msg, msg
    assert dt < 10, dt
    print(f"mistyped judge model: JudgeUnavailable after {dt:.2f} s: {msg[:160]}")
    spec = ModelSpec(name="judge", backend="openai", endpoint=url, model="tiny-judge", timeout=120)
    assert JudgeClient(spec, progress=False).check()["model"] == "tiny-judge"

def scripted_judge(path, replies:list, seed:int=0):
    """A real checkpoint whose greedy reply is fixed: every block's output projection is zeroed, so the last hidden state is
    the current token's embedding and the model is a bigram model; its LM head maps <|assistant|> -> replies[0] -> ... ->
    <eos>. vLLM serves it like any model, so the judge protocols and the agreement report meet verdicts that parse."""
    import torch
    tok = tiny_tokenizer("char"); tok.add_tokens(["[[A>B]]", "[[B>A]]", "[[7]]", "[[3]]"])
    m = tiny_lm(tok, "llama", d=128, layers=2, heads=2, seed=seed, max_pos=MAX_LEN)
    with torch.no_grad():
        for layer in m.model.layers: layer.self_attn.o_proj.weight.zero_(); layer.mlp.down_proj.weight.zero_()
        E = m.model.embed_tokens.weight
        h = E / (E.pow(2).mean(-1, keepdim=True) + m.config.rms_norm_eps).sqrt()   # what the final RMSNorm (weight 1) makes of a token
        W = m.lm_head.weight; W.normal_(0, 0.01)
        chain = ["<|assistant|>", *replies, tok.eos_token]
        for a, b in zip(chain, chain[1:]):
            ia, ib = tok.convert_tokens_to_ids(a), tok.convert_tokens_to_ids(b)
            W[ib] += 30 * h[ia] / h[ia].pow(2).sum()                             # logit 30 for b after a
    m.save_pretrained(path); tok.save_pretrained(path)
    return path

@pytest.fixture(scope="module")
def scripted_servers(tmp_path_factory):
    "Two real judges behind two real servers: both answer AlpacaEval with `m` and rate MT-Bench 7; A says [[A>B]], B [[B>A]]"
    d = tmp_path_factory.mktemp("scripted")
    a = scripted_judge(d / "a", ["m", "[[A>B]]", "[[7]]"], seed=5); b = scripted_judge(d / "b", ["m", "[[B>A]]", "[[7]]"], seed=6)
    with vllm_serve(a, "judge-a", d / "a.log", max_model_len=MAX_LEN) as url_a, vllm_serve(b, "judge-b", d / "b.log", max_model_len=MAX_LEN) as url_b:
        yield url_a, url_b

def _verdicts_from_files(root, judge):
    "Each judgment's verdict read back from the official files of one judge (independent of wrpo.scores)"
    out = {}
    for f in (root / "alpaca_eval").glob(f"*/{judge}/annotations.json"):
        for a in json.loads(f.read_text()):
            p = a["preference"]
            out[("alpaca_eval", a["generator_2"], a["instruction"])] = None if p is None else (p > 1.5) - (p < 1.5)
    for f in (root / "arena_hard" / "model_judgment" / judge).glob("*.jsonl"):
        for r in read_jsonl(f):
            for g, game in enumerate(r["games"]): out[("arena_hard", r["model"], r["question_id"], g)] = game["score"]
    for f in (root / "arena_hard_v2" / "model_judgment" / judge).glob("*.jsonl"):
        for r in read_jsonl(f):
            for g, game in enumerate(r["games"]): out[("arena_hard_v2", r["model"], r["uid"], g)] = (game or {}).get("score")
    for r in read_jsonl(root / "mt_bench" / "model_judgment" / f"{judge}_single.jsonl"):
        out[("mt_bench", r["model"], r["question_id"], r["turn"])] = None if r["score"] == -1 else r["score"]
    return out

def test_two_real_judges_agreement(scripted_servers, tmp_path):
    """`run_benchmarks` with two real judges (scripted checkpoints behind two real vllm servers): both judge every answer,
    each under its own name; they agree on every AlpacaEval side and MT-Bench rating and on no Arena-Hard game, and
    agreement.json's counts and shares equal those recomputed from the two judges' official judgment files."""
    from wrpo.paper_eval import run_benchmarks
    from wrpo.testing import benchmark_fixtures
    url_a, url_b = scripted_servers
    data = benchmark_fixtures(tmp_path / "data", n=3)
    tok = tiny_tokenizer("char"); models = {}
    for k, arch in enumerate(["gpt2", "llama"]):
        tiny_lm(tok, arch, d=32, seed=k, path=tmp_path / arch)
        models[f"tiny-{arch}"] = ModelSpec(name=arch, model=str(tmp_path / arch), device="cpu", batch_size=8)
    judge = lambda url, name: ModelSpec(name=name, backend="openai", endpoint=url, model=name, max_concurrency=2, max_retries=1, timeout=120)
    names = ["alpaca_eval", "arena_hard", "arena_hard_v2", "mt_bench"]
    out = tmp_path / "eval"
    res = run_benchmarks(names, models, out, judge(url_a, "judge-a"), data_dir=data, max_new_tokens=8, bootstrap_rounds=10,
                         compare_judges=[judge(url_b, "judge-b")], judge_max_tokens=12)
    ag = json.loads((out / "agreement.json").read_text())["judge-b"]
    print("agreement of two real scripted judges:", {b: (a["n_compared"], a["identical"], a["parsed_by_one_only"]) for b, a in ag.items()})
    va, vb = _verdicts_from_files(out, "judge-a"), _verdicts_from_files(out, "judge-b")
    assert set(va) == set(vb) and len(va) == 2 * (3 + 3 * 2 + 3 * 2 + 3 * 2), len(va)   # per model: 3 annotations, 6 + 6 games, 6 ratings
    assert all(v is not None for v in [*va.values(), *vb.values()])                     # every verdict parsed, by both
    for b in names:
        keys = [k for k in va if k[0] == b]
        assert ag[b]["n_compared"] == len(keys) and ag[b]["parsed_by_one_only"] == 0, (b, ag[b])
        assert abs(ag[b]["identical"] - sum(va[k] == vb[k] for k in keys) / len(keys)) < 1e-12, b
        assert ag[b]["n_models"] == 2
    assert (ag["alpaca_eval"]["identical"], ag["mt_bench"]["identical"], ag["arena_hard"]["identical"], ag["arena_hard_v2"]["identical"]) == (1.0, 1.0, 0.0, 0.0)
    assert {va[k] for k in va if k[0] == "mt_bench"} == {7}
    assert set(res["scores_by_judge"]) == {"judge-a", "judge-b"}
    md = (out / "agreement.md").read_text()
    assert "| judge-b | arena_hard | 12 | 0.000 | 0 | 2 |" in md and "How far the results depend on the judge" in md, md
    assert "† " in (out / "results.md").read_text()   # these judges' numbers are marked as not comparable with published ones
def test_wrpo_eval_with_a_mistyped_judge_fails_before_answering(server, tmp_path):
    """`wrpo eval --judge FILE` end to end (the shipped local-vllm recipe, pointed at the real server, its model name
    mistyped): it stops at the 1-token check, with the server's 404 and the served name, before any question is answered."""
    import yaml
    from wrpo.testing import benchmark_fixtures
    url, _ = server
    tok = tiny_tokenizer("char"); tiny_lm(tok, "gpt2", d=32, seed=0, path=tmp_path / "m")
    cfg = dict(name="typo", target=dict(name="t", model=str(tmp_path / "m"), device="cpu"), train=dict(variants=dict(wrpo={})),
               benchmarks=dict(names=["mt_bench"], models=["target"], data_dir=str(benchmark_fixtures(tmp_path / "data", n=2))))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    from wrpo.judge_models import load_judge   # the shipped local-judge recipe, pointed at this server, its model name mistyped
    j = dict(load_judge("local-vllm"), endpoint=url, model="tiny-judgee", max_retries=5, retry_backoff=2.0)
    (tmp_path / "judge.yaml").write_text(yaml.safe_dump(j))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "wrpo.cli", "eval", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--quiet",
                        "--judge", str(tmp_path / "judge.yaml")],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    dt = time.perf_counter() - t0
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-3000:]
    assert "JudgeUnavailable" in r.stderr and "HTTP 404" in r.stderr and "e.g. 'tiny-judge'" in r.stderr, r.stderr[-3000:]
    assert not (tmp_path / "run" / "benchmarks" / "mt_bench" / "model_answer").exists()   # nothing was answered
    print(f"wrpo eval with a mistyped judge failed after {dt:.1f} s (kernel start included)")
