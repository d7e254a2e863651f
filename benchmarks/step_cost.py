"""Step cost of WRPO against our DPO path and trl's DPOTrainer, same tiny model and data, measured side by side.

    python benchmarks/step_cost.py [--steps 30] [--batch 16] [--layers 4] [--d 128]

Each configuration runs in its own process (so peak memory is its own): step time is the median over the steps after
a warm-up, throughput counts the non-padding tokens through the policy per second, peak memory is the peak resident
set size on CPU (peak allocated memory on CUDA). Prints a table and the ratios the core issue targets:
WRPO/DPO step time <= 1.5 (three sequences against two) and per-token throughput no worse than trl's DPOTrainer.
"""
import argparse, json, os, resource, statistics, subprocess, sys, time

CONFIGS = {
    "wrpo":     "WRPOTrainer, dynamic alpha -> 0.5 (y_ws, y_wt, y_l)",
    "wrpo_dpo": "WRPOTrainer, static alpha = 0, log_unweighted_margins=False (our DPO path)",
    "trl_dpo":  "trl DPOTrainer on (y_wt, y_l)",
}

def worker(name, a):
    import torch
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer
    from wrpo.testing import cpu_args, tiny_lm, tiny_tokenizer
    from wrpo.data import load_quadruples, to_pairs
    from wrpo.trainer import WRPOConfig, WRPOTrainer
    torch.set_num_threads(a.threads)
    tok = tiny_tokenizer()
    g = torch.Generator().manual_seed(0)
    letters = "abcdefghijklmnopqrstuvwxyz "
    rnd = lambda n: "".join(letters[int(i)] for i in torch.randint(0, len(letters), (n,), generator=g))
    L = a.resp_len
    rows = [dict(prompt=[{"role": "user", "content": rnd(a.prompt_len)}],
                 **{k: [{"role": "assistant", "content": rnd(int(L * f))}] for k, f in
                    (("source_chosen", 1.0), ("target_chosen", 0.9), ("rejected", 1.1))}) for _ in range(a.batch * (a.steps + 2))]
    quads = load_quadruples(rows)
    model, ref = tiny_lm(tok, "llama", d=a.d, layers=a.layers, seed=0, max_pos=1024), tiny_lm(tok, "llama", d=a.d, layers=a.layers, seed=0, max_pos=1024)
    common = dict(max_steps=a.steps, per_device_train_batch_size=a.batch, logging_steps=10**6, learning_rate=1e-4, max_length=None)
    times, toks = [], []
    class Clock(TrainerCallback):
        def on_step_begin(self, *args, **kw): self.t = time.perf_counter()
        def on_step_end(self, *args, **kw): times.append(time.perf_counter() - self.t)
    if name == "trl_dpo":
        args = cpu_args(DPOConfig, **common); args.loss_type = ["sigmoid"]
        tr = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=to_pairs(quads), processing_class=tok, callbacks=[Clock()])
        per_example = lambda ex: len(ex["prompt_ids"]) * 2 + len(ex["chosen_ids"]) + len(ex["rejected_ids"])
    else:
        kw = dict(alpha=0.5) if name == "wrpo" else dict(alpha=0.0, alpha_schedule="static", log_unweighted_margins=False)
        tr = WRPOTrainer(model=model, ref_model=ref, args=cpu_args(WRPOConfig, **common, **kw), train_dataset=quads,
                         processing_class=tok, callbacks=[Clock()])
        n_seq = 3 if name == "wrpo" else 2
        cols = ["source_chosen_ids", "target_chosen_ids", "rejected_ids"][3 - n_seq:]
        per_example = lambda ex: len(ex["prompt_ids"]) * n_seq + sum(len(ex[c]) for c in cols)
    tokens_per_step = a.batch * statistics.mean(per_example(ex) for ex in tr.train_dataset)
    if torch.cuda.is_available(): torch.cuda.reset_peak_memory_stats()
    tr.train()
    step = statistics.median(times[a.warmup:])
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available() else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"step_s": step, "tokens_per_s": tokens_per_step / step, "peak_mb": peak / 2**20, "params": model.num_parameters()}

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=14); p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--batch", type=int, default=16); p.add_argument("--d", type=int, default=128)
    p.add_argument("--layers", type=int, default=4); p.add_argument("--resp-len", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=32); p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--worker", default=None)
    a = p.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(worker(a.worker, a))); return
    res = {}
    for name in CONFIGS:
        cmd = [sys.executable, __file__, "--worker", name] + [x for k, v in vars(a).items() if k != "worker" for x in (f"--{k.replace('_', '-')}", str(v))]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if out.returncode or not line: sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
        res[name] = json.loads(line[0][7:])
    print(f"tiny Llama {res['wrpo']['params']/1e6:.2f}M params, batch {a.batch}, ~{a.prompt_len}+{a.resp_len} chars/response, "
          f"{a.steps} steps ({a.warmup} warm-up), {a.threads} threads")
    print(f"{'config':<10} {'step ms':>9} {'tokens/s':>10} {'peak MB':>9}  what")
    for n, r in res.items(): print(f"{n:<10} {r['step_s']*1e3:>9.1f} {r['tokens_per_s']:>10.0f} {r['peak_mb']:>9.0f}  {CONFIGS[n]}")
    w, d, t = res["wrpo"], res["wrpo_dpo"], res["trl_dpo"]
    print(f"WRPO / our DPO step time:        {w['step_s']/d['step_s']:.2f}  (target <= 1.5)")
    print(f"WRPO / trl DPO step time:        {w['step_s']/t['step_s']:.2f}")
    print(f"our DPO / trl DPO step time:     {d['step_s']/t['step_s']:.2f}")
    print(f"WRPO / trl DPO tokens per s:     {w['tokens_per_s']/t['tokens_per_s']:.2f}  (target >= 1.0)")
    print(f"WRPO / trl DPO peak memory:      {w['peak_mb']/t['peak_mb']:.2f}")

if __name__ == "__main__": main()
