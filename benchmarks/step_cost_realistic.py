"""Step cost of WRPO with realistic fusion lengths: WRPO against our DPO path and trl's DPOTrainer, interleaved step by step.

    python benchmarks/step_cost_realistic.py [--shapes toy,smol135m] [--steps 3] [--warmup 1] [--batch 8] [--threads 2]

Models are random-initialised from configs (nothing downloaded): `toy` (a 4-layer d=128 Llama, vocab 512) and
`smol135m` (SmolLM2-135M's shape: LlamaConfig vocab 49152, hidden 576, 30 layers, 9 heads, 3 KV heads, intermediate
1536, tied embeddings). The dataset is built already tokenized with random ids: prompts 50-300 tokens, y_wt and y_l
100-300 each, y_ws 1.5-3x the mean of the two (uniform draws, seeded). Reference log-probs are precomputed
(`precompute_ref_log_probs=True`) for every method, so a step is the policy's forward + backward + optimiser update.

Methods, each in its own worker process:
  wrpo         WRPOTrainer, dynamic alpha (y_ws, y_wt, y_l), default layout (shared prompt, padding-free)
  wrpo_dpo     WRPOTrainer, static alpha = 0, log_unweighted_margins=False (our DPO path: y_ws never forwarded), default layout
  trl_dpo      trl's DPOTrainer (sigmoid loss) on (y_wt, y_l)
  wrpo_mask    (optional, --methods) WRPOTrainer with attention="mask": the shared-prompt rows under the dense 4-D mask
               (before per-segment attention)
  wrpo_padded  (optional, --methods) WRPOTrainer with share_prompt=False, padding_free=False: the previous padded batch

Timing: the parent drives the workers round-robin, one optimiser step at a time (workers are started one after the other; between steps each
hands freed memory back with malloc_trim, untimed, since three 135M-parameter workers with a step's activations each
do not fit in 24 GB) (a callback blocks each worker until the
parent says go), so load from other jobs on a shared machine hits all methods alike; step time is the median of the steps
after the warm-up. Useful tokens per step: each prompt once plus each response (P + R_ws + R_wt + R_l for WRPO,
P + R_wt + R_l for a DPO pair), batch x the dataset's mean, over the median step time.
Peak memory: on CPU, the peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) of the method's own process,
which sees everything torch allocates (tracemalloc only sees Python's allocator, not torch's tensors); it includes the
weights, the Adam state and the one-off reference pass, which are alike for all methods. Also printed: the peak above
the RSS at the start of training (the steps' working memory, roughly). On CUDA: `torch.cuda.max_memory_allocated`.
Ends with one JSON line per shape.
"""
import argparse, ctypes, json, os, resource, statistics, subprocess, sys, time

METHODS = ("wrpo", "wrpo_dpo", "trl_dpo")
SHAPES = {
    "toy": dict(vocab_size=512, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                intermediate_size=256, tie_word_embeddings=False),
    "smol135m": dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                     intermediate_size=1536, tie_word_embeddings=True),
}

def lengths(n, seed=0):
    "n draws of (prompt, y_ws, y_wt, y_l) lengths."
    import random
    r = random.Random(seed)
    out = []
    for _ in range(n):
        p, wt, l = r.randint(50, 300), r.randint(100, 300), r.randint(100, 300)
        out.append((p, round(r.uniform(1.5, 3.0) * (wt + l) / 2), wt, l))
    return out

def rss_bytes():
    with open("/proc/self/statm") as f: return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def worker(a):
    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer
    from wrpo.testing import cpu_args, tiny_tokenizer
    from wrpo.trainer import WRPOConfig, WRPOTrainer
    torch.set_num_threads(a.threads)
    name, shape = a.worker, SHAPES[a.shape]
    n = a.batch * (a.steps + a.warmup)
    g = torch.Generator().manual_seed(0)
    ids = lambda k: torch.randint(3, shape["vocab_size"], (k,), generator=g).tolist()
    rows = [dict(prompt_ids=ids(p), source_chosen_ids=ids(ws), target_chosen_ids=ids(wt), rejected_ids=ids(l))
            for p, ws, wt, l in lengths(n)]
    tok = tiny_tokenizer()   # only its pad token is used: the data is tokenized already
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(max_position_embeddings=2048, pad_token_id=0, **shape), attn_implementation="sdpa")
    common = dict(max_steps=a.steps + a.warmup, per_device_train_batch_size=a.batch, logging_steps=10**6, learning_rate=1e-5,
                  max_length=None, precompute_ref_log_probs=True, precompute_ref_batch_size=a.batch)
    from wrpo.trainer import checkpointing_field
    ckpt = a.checkpointing == "on"   # the same for every method (trl's DPOConfig turns it on by default, WRPOConfig only with CUDA)
    common.update({checkpointing_field(): ckpt, **({"gradient_checkpointing": ckpt} if checkpointing_field() != "gradient_checkpointing" else {})})
    libc = ctypes.CDLL("libc.so.6")
    def hwm_bytes():   # the process's resident high-water mark (VmHWM); reset with /proc/self/clear_refs
        with open("/proc/self/status") as f: return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM"))
    class Gate(TrainerCallback):   # one step per "go" from the parent
        def on_train_begin(self, *args, **kw): self.base, self.hwm, self.steps = rss_bytes(), hwm_bytes(), []
        def on_step_begin(self, *args, **kw):
            print("WAIT", flush=True)
            while sys.stdin.readline().strip() != "go": libc.malloc_trim(0)   # "trim": after the reference pass
            self.hwm = max(self.hwm, hwm_bytes())
            with open("/proc/self/clear_refs", "w") as f: f.write("5")   # the step's own peak from here
            self.s0 = rss_bytes()
            self.t = time.perf_counter()
        def on_step_end(self, *args, **kw):
            print(f"STEP {time.perf_counter() - self.t:.6f}", flush=True)
            h = hwm_bytes(); self.hwm = max(self.hwm, h); self.steps.append(h - self.s0)
            libc.malloc_trim(0)   # untimed: hand freed activations back to the OS, so idle workers do not hold a step's peak
    gate = Gate()
    if name == "trl_dpo":
        class TokenizedDPO(DPOTrainer):
            def _prepare_dataset(self, dataset, *args, **kw): return dataset   # already tokenized
        ds = Dataset.from_list([dict(prompt_ids=r["prompt_ids"], chosen_ids=r["target_chosen_ids"], rejected_ids=r["rejected_ids"]) for r in rows])
        args = cpu_args(DPOConfig, **common); args.loss_type = ["sigmoid"]
        tr = TokenizedDPO(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[gate])
        useful = statistics.mean(len(r["prompt_ids"]) + len(r["target_chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
    else:
        kw = dict(alpha=0.5) if name in ("wrpo", "wrpo_mask", "wrpo_padded") else dict(alpha=0.0, alpha_schedule="static", log_unweighted_margins=False)
        if name == "wrpo_padded": kw.update(share_prompt=False, padding_free=False)
        if name == "wrpo_mask": kw.update(attention="mask")
        tr = WRPOTrainer(model=model, args=cpu_args(WRPOConfig, **common, **kw), train_dataset=Dataset.from_list(rows),
                         processing_class=tok, callbacks=[gate])
        cols = ["source_chosen_ids", "target_chosen_ids", "rejected_ids"][1 if name == "wrpo_dpo" else 0:]
        useful = statistics.mean(len(r["prompt_ids"]) + sum(len(r[c]) for c in cols) for r in rows)
    cuda = torch.cuda.is_available()
    if cuda: torch.cuda.reset_peak_memory_stats()
    tr.train()
    peak = torch.cuda.max_memory_allocated() if cuda else max(gate.hwm, hwm_bytes())
    step_peak = statistics.median(gate.steps[a.warmup:]) if not cuda else None   # above the RSS at the step's start (weights, gradients, Adam state in it)
    print("RESULT " + json.dumps({"useful_tokens_per_step": a.batch * useful, "peak_mb": peak / 2**20,
                                  "peak_above_start_mb": (peak - (0 if cuda else gate.base)) / 2**20,
                                  "step_rise_mb": None if step_peak is None else step_peak / 2**20,
                                  "params": model.num_parameters()}), flush=True)

def run_shape(shape, a):
    env = {**os.environ, "TQDM_DISABLE": "1", "TRL_EXPERIMENTAL_SILENCE": "1", "OMP_NUM_THREADS": str(a.threads)}
    procs = {}
    def until(p, prefix):
        while True:
            line = p.stdout.readline()
            if not line: sys.exit(f"worker died:\n{p.stderr.read()[-3000:]}")
            if line.startswith(prefix): return line
    for m in a.methods:   # start one at a time: the reference passes do not overlap
        cmd = [sys.executable, __file__, "--worker", m, "--shape", shape, "--steps", str(a.steps), "--warmup", str(a.warmup),
               "--batch", str(a.batch), "--threads", str(a.threads), "--checkpointing", a.checkpointing]
        procs[m] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        until(procs[m], "WAIT")
        procs[m].stdin.write("trim\n"); procs[m].stdin.flush()
    times = {m: [] for m in a.methods}
    for step in range(a.steps + a.warmup):
        for m in (a.methods if step % 2 == 0 else a.methods[::-1]):   # alternate the order too
            p = procs[m]
            if step: until(p, "WAIT")
            p.stdin.write("go\n"); p.stdin.flush()
            times[m].append(float(until(p, "STEP").split()[1]))
        print(f"  {shape} step {step}: " + ", ".join(f"{m} {times[m][-1]:.2f}s" for m in a.methods), flush=True)
    res = {}
    for m, p in procs.items():
        r = json.loads(until(p, "RESULT")[7:]); p.wait()
        r["step_s"] = statistics.median(times[m][a.warmup:]); r["tokens_per_s"] = r["useful_tokens_per_step"] / r["step_s"]
        res[m] = r
    return res

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="toy,smol135m"); p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--steps", type=int, default=3); p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=8); p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpointing", choices=("off", "on"), default=None,
                   help="activation checkpointing for every method (default: on with CUDA, off on a CPU, as WRPOConfig)")
    p.add_argument("--worker", default=None); p.add_argument("--shape", default=None)
    a = p.parse_args()
    if a.checkpointing is None:
        import torch
        a.checkpointing = "on" if torch.cuda.is_available() else "off"
    if a.worker: return worker(a)
    a.methods = a.methods.split(",")
    import torch
    print(f"torch {torch.__version__}, {a.threads} threads, batch {a.batch}, activation checkpointing {a.checkpointing} (all methods), "
          f"{a.steps} timed steps after {a.warmup} warm-up; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"lengths: prompt 50-300, y_wt/y_l 100-300, y_ws 1.5-3x")
    lines = []
    for shape in a.shapes.split(","):
        res = run_shape(shape, a)
        print(f"{shape}: {res[a.methods[0]]['params']/1e6:.1f}M params")
        print(f"{'method':<12} {'step s':>8} {'useful tok/step':>16} {'useful tok/s':>13} {'peak MB':>9} {'above start MB':>15} {'step rise MB':>13}")
        for m, r in res.items():
            print(f"{m:<12} {r['step_s']:>8.2f} {r['useful_tokens_per_step']:>16.0f} {r['tokens_per_s']:>13.0f} {r['peak_mb']:>9.0f} "
                  f"{r['peak_above_start_mb']:>15.0f} {r['step_rise_mb'] or 0:>13.0f}")
        w, t = res["wrpo"], res["trl_dpo"]
        out = {"shape": shape, "batch": a.batch, "checkpointing": a.checkpointing, "wrpo_over_trl_dpo_step": round(w["step_s"] / t["step_s"], 3),
               "wrpo_over_own_dpo_step": round(w["step_s"] / res["wrpo_dpo"]["step_s"], 3) if "wrpo_dpo" in res else None,
               "wrpo_over_trl_dpo_tokens_per_s": round(w["tokens_per_s"] / t["tokens_per_s"], 3),
               "wrpo_over_trl_dpo_peak_mem": round(w["peak_mb"] / t["peak_mb"], 3)}
        if "wrpo_dpo" in res:
            out["own_dpo_over_trl_dpo_step"] = round(res["wrpo_dpo"]["step_s"] / t["step_s"], 3)
            out["own_dpo_over_trl_dpo_peak_mem"] = round(res["wrpo_dpo"]["peak_mb"] / t["peak_mb"], 3)
        out["wrpo_peak_rss_mb" if not torch.cuda.is_available() else "wrpo_peak_mb"] = round(w["peak_mb"])
        for m in ("wrpo_mask", "wrpo_padded"):
            if m in res: out[f"{m}_over_trl_dpo_step"] = round(res[m]["step_s"] / t["step_s"], 3)
        lines.append(json.dumps(out))
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for l in lines: print(l)

if __name__ == "__main__": main()
