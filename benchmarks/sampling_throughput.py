"""Batched vs one-prompt-at-a-time sampling with the transformers backend, same model and prompts, in one run.

Builds a small random Llama (BPE tokenizer with a chat template) offline, then samples the same prompts twice
with `wrpo.sampling.TransformersSampler`: once with `batch_size` prompts per `generate` call (length-sorted, left
padded) and once with one prompt per call. Prints completion tokens/s for both and their ratio (target >= 5x), for
each number of samples per prompt in --n: with n=1 one-at-a-time means one sequence per `generate` call; with n=5
(the paper's setting) each one-prompt call already decodes its 5 samples together, so the gap is smaller.

    python benchmarks/sampling_throughput.py [--prompts 128] [--n 1 5] [--batch-size 64] [--max-new-tokens 32] [--threads 1]
"""
import argparse, json, tempfile, time

import torch

from wrpo.config import ModelSpec
from wrpo.sampling import TransformersSampler
from wrpo.testing import tiny_lm, tiny_tokenizer


def run(sampler, prompts, n, seed=0):
    "Completion tokens/s of one pass over `prompts`"
    sampler.stats.update(completion_tokens=0, seconds=0.0)
    t0 = time.perf_counter()
    sampler.generate(prompts, n, seed=seed)
    wall = time.perf_counter() - t0
    return sampler.stats["completion_tokens"], wall


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--n", type=int, nargs="+", default=[1, 5], help="samples per prompt (paper: 5), one run each")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--d", type=int, default=128, help="hidden size")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default); 1 is steadiest on a shared CPU")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    tok = tiny_tokenizer("bpe")
    words = "the quick brown fox jumps over the lazy dog sort these numbers reverse the word hello".split()
    prompts = [f"please {' '.join(words[(i * 3) % len(words):][: 2 + i % 9])} {i}" for i in range(a.prompts)]
    with tempfile.TemporaryDirectory() as td:
        model = tiny_lm(tok, "llama", seed=0, d=a.d, layers=a.layers, kv_heads=2)
        n_params = sum(p.numel() for p in model.parameters())
        spec = ModelSpec(name="bench", model="in-memory", max_new_tokens=a.max_new_tokens, device=a.device)
        batched = TransformersSampler(ModelSpec(**{**spec.__dict__, "batch_size": a.batch_size}), model=model, tokenizer=tok)
        single = TransformersSampler(ModelSpec(**{**spec.__dict__, "batch_size": 1}), model=model, tokenizer=tok)
        run(batched, prompts[:4], 1)  # warm-up
        out = []
        for n in a.n:
            tb, wb = run(batched, prompts, n)
            ts, ws = run(single, prompts, n)
            out.append(dict(model=f"llama d={a.d} layers={a.layers} ({n_params / 1e6:.2f}M params)", device=a.device,
                            threads=torch.get_num_threads(), prompts=a.prompts, n=n, max_new_tokens=a.max_new_tokens,
                            batch_size=a.batch_size, batched_tokens=tb, batched_s=round(wb, 2), batched_tok_s=round(tb / wb, 1),
                            single_tokens=ts, single_s=round(ws, 2), single_tok_s=round(ts / ws, 1),
                            ratio=round((tb / wb) / (ts / ws), 2)))
    print(json.dumps(out, indent=1))
    for r in out:
        print(f"n={r['n']}: batched {r['batched_tok_s']} tok/s vs one-prompt-at-a-time {r['single_tok_s']} tok/s: "
              f"ratio {r['ratio']}x (target >= 5x)")
    return out


if __name__ == "__main__":
    main()
