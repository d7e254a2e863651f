"""Attention of a shared-prompt WRPO batch three ways, side by side in one run: the dense 4-D mask, per-segment SDPA
(`wrpo.packing.segment_attention`) and FlexAttention with a block mask.

    python benchmarks/attention_layouts.py [--batch 2 8] [--repeats 3] [--threads 2] [--device cpu]

One attention layer of SmolLM2-135M's shape (9 query heads, 3 key/value heads, head dim 64) on the packed rows of a
batch at the realistic fusion lengths of `step_cost_realistic.py` (prompts 50-300 tokens, y_wt and y_l 100-300, y_ws
1.5-3x), laid out by `wrpo.packing.pack_responses` (each prompt once, first-fit rows). Each method runs forward and
backward on the same random queries, keys and values; the time is the median of `--repeats` after one warm-up. The
outputs are compared on every token of a unit (not row-end padding) before timing. Prints the share of the dense
entries the units need, a table, and one JSON line per batch with the ratios to the dense mask.

FlexAttention: torch 2.13 has no FlexAttention backward on a CPU, so there it is timed forward only (and said so); on
CUDA it is compiled (`torch.compile(flex_attention)`) and timed forward and backward like the others.
"""
import argparse, json, os, statistics, sys, time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_cost_realistic import lengths  # noqa: E402
from wrpo.packing import pack_responses, segment_attention  # noqa: E402

H, HKV, D = 9, 3, 64

def padded_batch(b, seed=0):
    "The trainer's padded (3b, T) batch of one step at the realistic lengths (random ids: only the layout matters)."
    ls = lengths(b, seed)
    T = max(p + max(ws, wt, l) for p, ws, wt, l in ls)
    ids = torch.zeros(3 * b, T, dtype=torch.long); att = torch.zeros_like(ids); cm = torch.zeros_like(ids)
    for i, (p, *rs) in enumerate(ls):
        for k, r in enumerate(rs):
            ids[k * b + i, :p + r] = 1; att[k * b + i, :p + r] = 1; cm[k * b + i, p:p + r] = 1
    return ids, att, cm

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[2, 8]); ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2); ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    print(f"torch {torch.__version__}, {dev}, {dtype}, {a.threads} threads; one attention layer (9 heads, 3 KV heads, dim 64), forward+backward")
    lines = []
    for b in a.batch:
        ids, att, cm = (x.to(dev) for x in padded_batch(b))
        pk = pack_responses(ids, att, cm, mask_dtype=dtype)
        mask = pk["attention_mask"]; R, L = pk["input_ids"].shape
        valid = torch.zeros(R, L, dtype=torch.bool, device=dev)
        for r, row in enumerate(pk["spans"]): valid[r, :row[-1][2][-1][1]] = True
        need = float((mask == 0).sum()) / mask.numel()
        g = torch.Generator(device=dev).manual_seed(0)
        def qkv():
            return [torch.randn(R, h, L, D, generator=g, device=dev, dtype=dtype).requires_grad_() for h in (H, HKV, HKV)]
        rep = lambda x: x[:, :, None].expand(R, HKV, H // HKV, L, D).reshape(R, H, L, D)
        methods = {
            "dense_mask": (lambda q, k, v: F.scaled_dot_product_attention(q, rep(k), rep(v), attn_mask=mask), True),
            "segments": (lambda q, k, v: segment_attention(None, q, k, v, None, wrpo_spans=(pk["spans"], None))[0].transpose(1, 2), True),
        }
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
            vis = mask[:, 0] == 0
            bm = create_block_mask(lambda bb, h, qi, ki: vis[bb, qi, ki], R, None, L, L, device=dev)
            flex = torch.compile(flex_attention) if dev.type == "cuda" else flex_attention
            methods["flex"] = (lambda q, k, v: flex(q, k, v, block_mask=bm, enable_gqa=True), dev.type == "cuda")
        except Exception as e: print(f"flex: unavailable ({type(e).__name__}: {e})")
        q, k, v = qkv()
        ref = methods["dense_mask"][0](q, k, v).transpose(1, 2)[valid].float().detach()
        res = {}
        for name, (f, backward) in methods.items():
            run = f if backward else (lambda *x: f(*(t.detach() for t in x)))   # forward only: inputs without grad
            err = (run(q, k, v).transpose(1, 2)[valid].float() - ref.to(dev)).abs().max().item()
            ts = []
            for _ in range(a.repeats + 1):
                x = qkv()
                if dev.type == "cuda": torch.cuda.synchronize()
                t = time.perf_counter()
                o = run(*x)
                if backward: o.float().sum().backward()
                if dev.type == "cuda": torch.cuda.synchronize()
                ts.append(time.perf_counter() - t)
            res[name] = dict(s=statistics.median(ts[1:]), max_err=err, backward=backward)
        print(f"batch {b}: {R} packed rows of {L} tokens; the units need {need:.1%} of the dense mask's entries")
        print(f"{'method':<12} {'ms/layer':>9} {'x30 layers s':>13} {'/ dense':>8} {'max |diff|':>11}  pass")
        for name, r in res.items():
            print(f"{name:<12} {r['s'] * 1e3:>9.1f} {r['s'] * 30:>13.2f} {r['s'] / res['dense_mask']['s']:>8.2f} {r['max_err']:>11.1e}  "
                  f"{'forward+backward' if r['backward'] else 'forward only (no FlexAttention backward on this device)'}")
        lines.append(json.dumps({"batch": b, "device": dev.type, "rows": R, "row_tokens": L, "needed_share": round(need, 3),
                                 **{f"{n}_over_dense": round(r["s"] / res["dense_mask"]["s"], 3) for n, r in res.items() if n != "dense_mask"},
                                 **{f"{n}_backward": r["backward"] for n, r in res.items()}}))
    for l in lines: print(l)

if __name__ == "__main__": main()
