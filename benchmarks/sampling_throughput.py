"""Batched vs one-prompt-at-a-time sampling with the transformers backend, same model and prompts, in one run.

Builds a random Llama offline (BPE tokenizer with a chat template), then samples the same prompts twice with
`wrpo.sampling.TransformersSampler`: once with `batch_size` prompts per `generate` call (length-sorted, left padded)
and once with one prompt per call. Prints completion tokens/s for both and their ratio (target >= 5x), for each number
of samples per prompt in --n: with n=1 one-at-a-time means one sequence per `generate` call; with n=5 (the paper's
setting) each one-prompt call already decodes its 5 samples together, so the gap is smaller.

    python benchmarks/sampling_throughput.py [--shape tiny|smol135m] [--prompts P] [--n 1 5] [--batch-size B]
                                             [--max-new-tokens T] [--threads 1] [--device cpu]

Shapes (random weights, nothing downloaded; tokenizer `wrpo.testing.tiny_tokenizer("bpe")`, 320 ids):
  tiny      `wrpo.testing.tiny_lm` Llama, --d 128 --layers 4, vocabulary = the tokenizer's (0.67M params).
            Defaults: 128 prompts, batch_size 64, 32 new tokens.
  smol135m  SmolLM2-135M's shape: LlamaConfig vocab 49152, hidden 576, 30 layers, 9 heads, 3 KV heads, intermediate
            1536, tied embeddings, 2048 positions, sdpa attention, float32, torch.manual_seed(0), eval mode (134.5M
            params). Defaults: 24 prompts, batch_size 8 (ModelSpec's default), 32 new tokens (~3.5 min on 2 shared cores).
            Its vocabulary is larger than the tokenizer's: pad/bos/eos ids (config and generation config) are the
            tokenizer's, and a forward hook on the LM head sets the logits of ids >= len(tokenizer) to -inf, so only
            ids the tokenizer can decode are ever sampled (same distribution as `suppress_tokens` over those ids).
            The full 49152-wide LM head is still computed, and the logits processors (temperature, top-k, top-p)
            still run over 49152 logits, so the compute per token is the real model's. Not `suppress_tokens` or
            `bad_words_ids` in the generation config: their processors cost ~6 ms per step (torch.isin over the
            vocabulary) or ~170 ms per `generate` call (48832 banned ids) on one core, a bias against the
            one-prompt-at-a-time baseline; not a sliced LM head, which would drop a fifth of the model's compute. The
            sampler itself is unchanged (it passes no logits processors). Every pass checks that all ids fed back to
            the model stay below len(tokenizer).

Each pass (shape, n, batched or one-at-a-time) runs in its own fresh process: build the model, warm up on 2 prompts
with 4 new tokens, then sample all prompts with seed 0. Batched and one-at-a-time passes draw different random
streams (different batch compositions), so their completion token counts differ slightly when some completions end
early with EOS (counted: `*_stopped`). With smol135m none do: the sampler passes no top_k, so transformers' default
top_k=50 applies, and this random model ranks EOS far below its top 50, so every completion runs to --max-new-tokens.
Memory, per pass: on CPU, `peak_rss_mb` is the process's `resource.getrusage(RUSAGE_SELF).ru_maxrss` (weights, build
and warm-up included); `rss_rise_mb` is the peak RSS during the pass above the RSS just before it (the peak is reset
first through /proc/self/clear_refs; null where that is not possible): the KV cache, activations, logits and allocator
slack the pass needed. On CUDA: `torch.cuda.max_memory_allocated` (`cuda_peak_mb`) and its rise above the allocation
before the pass (`cuda_rise_mb`); this path is untested here (no GPU).
Prints one JSON object per n (to stdout, then one summary line per n); settings and progress go to stderr.
"""
import argparse, json, os, resource, subprocess, sys, time

SHAPES = {
    "tiny": None,  # wrpo.testing.tiny_lm with --d/--layers
    "smol135m": dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                     intermediate_size=1536, tie_word_embeddings=True, max_position_embeddings=2048),
}
DEFAULTS = {"tiny": dict(prompts=128, batch_size=64, max_new_tokens=32, d=128, layers=4),
            "smol135m": dict(prompts=24, batch_size=8, max_new_tokens=32)}
MODES = ("batched", "single")


def prompts_for(k):
    words = "the quick brown fox jumps over the lazy dog sort these numbers reverse the word hello".split()
    return [f"please {' '.join(words[(i * 3) % len(words):][: 2 + i % 9])} {i}" for i in range(k)]


def build(a, tok):
    "The model of `a.shape`, its description and parameter count"
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig
    from wrpo.testing import tiny_lm
    if a.shape == "tiny":
        model = tiny_lm(tok, "llama", seed=0, d=a.d, layers=a.layers, kv_heads=2)
        n_params = sum(p.numel() for p in model.parameters())
        return model, f"llama d={a.d} layers={a.layers} ({n_params / 1e6:.2f}M params)", n_params
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**SHAPES[a.shape], **ids), attn_implementation="sdpa").eval()
    model.generation_config = GenerationConfig(**ids)
    V = len(tok)
    def only_tokenizer_ids(module, args, logits):  # ids the tokenizer cannot decode are never sampled
        logits[..., V:] = float("-inf")
        return logits
    model.lm_head.register_forward_hook(only_tokenizer_ids)
    n_params = sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    s = SHAPES[a.shape]
    return model, (f"{a.shape}: llama d={s['hidden_size']} layers={s['num_hidden_layers']} vocab={s['vocab_size']}, "
                   f"sampled over the tokenizer's {V} ids ({n_params / 1e6:.2f}M params)"), n_params


def rss_mb():
    with open("/proc/self/statm") as f: return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def hwm_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024


def worker(a):
    "One pass in this (fresh) process: tokens, seconds, stops, memory"
    import gc, torch
    from wrpo.config import ModelSpec
    from wrpo.sampling import TransformersSampler
    from wrpo.testing import tiny_tokenizer
    if a.threads: torch.set_num_threads(a.threads)
    tok = tiny_tokenizer("bpe")
    model, desc, n_params = build(a, tok)
    seen = [0]
    def max_id(module, args, kwargs):  # prompt ids, then each sampled id fed back
        x = kwargs.get("input_ids", args[0] if args else None)
        if x is not None: seen[0] = max(seen[0], int(x.max()))
    model.register_forward_pre_hook(max_id, with_kwargs=True)
    spec = ModelSpec(name="bench", model="in-memory", max_new_tokens=a.max_new_tokens, device=a.device,
                     batch_size=a.batch_size if a.worker == "batched" else 1)
    sampler = TransformersSampler(spec, model=model, tokenizer=tok)
    warm = TransformersSampler(ModelSpec(**{**spec.__dict__, "max_new_tokens": 4}), model=model, tokenizer=tok)
    prompts = prompts_for(a.prompts)
    warm.generate(prompts[:2], 1, seed=0)
    gc.collect()
    cuda = sampler.model.device.type == "cuda"
    if cuda: torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); cuda0 = torch.cuda.memory_allocated()
    try:
        with open("/proc/self/clear_refs", "w") as f: f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        base = rss_mb()
    except OSError: base = None
    sampler.stats.update(completion_tokens=0, seconds=0.0)
    t0 = time.perf_counter()
    sampler.generate(prompts, a.n[0], seed=0)  # a worker gets one n
    if cuda: torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    out = dict(model=desc, params=n_params, threads=torch.get_num_threads(), tokens=sampler.stats["completion_tokens"],
               seconds=wall, stopped=sum(e["finish_reason"] == "stop" for es in sampler.endings for e in es),
               completions=sum(map(len, sampler.endings)), max_id=seen[0], vocab=len(tok),
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               rss_rise_mb=None if base is None else hwm_mb() - base)
    if cuda: out.update(cuda_peak_mb=torch.cuda.max_memory_allocated() / 2**20,
                        cuda_rise_mb=(torch.cuda.max_memory_allocated() - cuda0) / 2**20)
    return out


def one_pass(a, mode, n):
    "Run one pass in a fresh process (this script with --worker)"
    args = dict(shape=a.shape, prompts=a.prompts, batch_size=a.batch_size, max_new_tokens=a.max_new_tokens,
                threads=a.threads, device=a.device, n=n, worker=mode)
    if a.shape == "tiny": args.update(d=a.d, layers=a.layers)
    cmd = [sys.executable, __file__] + [x for k, v in args.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    line = [l for l in res.stdout.splitlines() if l.startswith("RESULT ")]
    if res.returncode or not line: sys.exit(f"{mode} pass (n={n}) failed:\n{res.stderr[-3000:]}")
    r = json.loads(line[-1][len("RESULT "):])
    if r["max_id"] >= r["vocab"]: sys.exit(f"{mode} pass (n={n}) fed id {r['max_id']} >= the tokenizer's {r['vocab']} ids")
    print(f"  {mode:7s} n={n}: {r['tokens']} tokens in {r['seconds']:.1f} s ({time.perf_counter() - t0:.0f} s with the "
          f"process start and build), peak RSS {r['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=tuple(SHAPES), default="tiny")
    ap.add_argument("--prompts", type=int, default=None, help="default: tiny 128, smol135m 24")
    ap.add_argument("--n", type=int, nargs="+", default=[1, 5], help="samples per prompt (paper: 5), one run each")
    ap.add_argument("--batch-size", type=int, default=None, help="prompts per generate call; default: tiny 64, smol135m 8")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: 32")
    ap.add_argument("--d", type=int, default=None, help="hidden size (tiny only; default 128)")
    ap.add_argument("--layers", type=int, default=None, help="layers (tiny only; default 4)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default); 1 is steadiest on a shared CPU")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--worker", choices=MODES, default=None, help=argparse.SUPPRESS)  # internal: run one pass, print RESULT
    a = ap.parse_args(argv)
    if a.shape != "tiny" and (a.d is not None or a.layers is not None): ap.error("--d/--layers size the tiny shape only")
    for k, v in DEFAULTS[a.shape].items():
        if getattr(a, k) is None: setattr(a, k, v)
    if a.worker:
        print("RESULT " + json.dumps(worker(a)), flush=True); return
    print(f"shape {a.shape}: {a.prompts} prompts, n {a.n}, batch_size {a.batch_size} vs 1, max_new_tokens {a.max_new_tokens}, "
          f"threads {a.threads or 'torch default'}, device {a.device}; each pass in a fresh process", file=sys.stderr, flush=True)
    out = []
    for n in a.n:
        rb, rs = one_pass(a, "batched", n), one_pass(a, "single", n)
        tb, wb, ts, ws = rb["tokens"], rb["seconds"], rs["tokens"], rs["seconds"]
        r = dict(model=rb["model"], shape=a.shape, params=rb["params"], device=a.device, threads=rb["threads"], prompts=a.prompts,
                 n=n, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size,
                 batched_tokens=tb, batched_s=round(wb, 2), batched_tok_s=round(tb / wb, 1), batched_stopped=rb["stopped"],
                 single_tokens=ts, single_s=round(ws, 2), single_tok_s=round(ts / ws, 1), single_stopped=rs["stopped"],
                 ratio=round((tb / wb) / (ts / ws), 2), completions=rb["completions"],
                 peak_rss_mb=round(max(rb["peak_rss_mb"], rs["peak_rss_mb"])))
        for m, x in (("batched", rb), ("single", rs)):
            r[f"{m}_peak_rss_mb"] = round(x["peak_rss_mb"])
            r[f"{m}_rss_rise_mb"] = None if x["rss_rise_mb"] is None else round(x["rss_rise_mb"], 1)
            if "cuda_peak_mb" in x:
                r[f"{m}_cuda_peak_mb"], r[f"{m}_cuda_rise_mb"] = round(x["cuda_peak_mb"]), round(x["cuda_rise_mb"], 1)
        out.append(r)
    print(json.dumps(out, indent=1))
    for r in out:
        mem = (f"peak RSS {r['batched_peak_rss_mb']} / {r['single_peak_rss_mb']} MB, "
               f"rise during the pass {r['batched_rss_rise_mb']} / {r['single_rss_rise_mb']} MB")
        if "batched_cuda_peak_mb" in r: mem += f", CUDA peak {r['batched_cuda_peak_mb']} / {r['single_cuda_peak_mb']} MB"
        print(f"n={r['n']}: batched {r['batched_tok_s']} tok/s vs one-prompt-at-a-time {r['single_tok_s']} tok/s: "
              f"ratio {r['ratio']}x (target >= 5x); {mem} (batched / single)")
    return out


if __name__ == "__main__":
    main()
