"""The GPU check (scripts/gpu_check.sh): WRPO and DPO steps of random-initialised models of real shapes (built from configs,
nothing downloaded) in bf16 with gradient checkpointing and precomputed reference log-probs, then the same WRPO run under
DeepSpeed ZeRO-3 on one GPU through `accelerate launch` and the shipped config. Prints one JSON line: step time, useful
tokens/s and peak memory per shape and method, and the attention layouts of `benchmarks/attention_layouts.py` (the dense
mask, per-segment SDPA, compiled FlexAttention) and, with 2 or more GPUs, the data builder's sampling and scoring of one source in
1 and in 2 worker processes (build.workers, one GPU each). `--smoke` runs a tiny shape on the CPU (checks the script, measures nothing)."""
import argparse, json, os, random, subprocess, sys, tempfile, time
import torch

SHAPES = {  # (LlamaConfig arguments): the real widths, depth cut where noted
    "llama3-8b-4layers": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=4,
                              num_attention_heads=32, num_key_value_heads=8),
    "llama3.2-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                        num_attention_heads=32, num_key_value_heads=8),
    "smoke": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
}

def quadruples(n, vocab, seed=0, prompt=(50, 300), target=(100, 300), source_x=(1.5, 3.0)):
    "Tokenized quadruples with realistic lengths: the best source response 1.5-3x longer than the target's own"
    rng = random.Random(seed); ids = lambda k: [rng.randrange(10, vocab) for _ in range(k)]
    rows = []
    for _ in range(n):
        wt, l = rng.randint(*target), rng.randint(*target)
        rows.append(dict(prompt_ids=ids(rng.randint(*prompt)), source_chosen_ids=ids(int(wt * rng.uniform(*source_x))),
                         target_chosen_ids=ids(wt), rejected_ids=ids(l)))
    return rows

def run_one(shape, method, steps, batch, smoke):
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback
    from wrpo.trainer import hardware_kwargs
    from wrpo.testing import tiny_tokenizer
    from wrpo.trainer import WRPOConfig, WRPOTrainer
    cuda = torch.cuda.is_available()
    rows = quadruples(batch * (steps + 1), SHAPES[shape]["vocab_size"])
    useful = sum(len(r["prompt_ids"]) + len(r["target_chosen_ids"]) + len(r["rejected_ids"]) +
                 (len(r["source_chosen_ids"]) if method == "wrpo" else 0) for r in rows[:batch * steps]) / steps
    tok = tiny_tokenizer()
    args = WRPOConfig(**hardware_kwargs(dict(output_dir=tempfile.mkdtemp(prefix="gpu-check-"), max_steps=steps + 1,
        per_device_train_batch_size=batch, learning_rate=1e-6, precompute_ref_log_probs=True, beta=0.01, max_length=4096,
        alpha=0.1 if method == "wrpo" else 0.0, alpha_schedule="dynamic" if method == "wrpo" else "static",
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, seed=0)))
    if cuda: torch.cuda.reset_peak_memory_stats()
    model = LlamaForCausalLM(LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, pad_token_id=tok.pad_token_id))
    times = []
    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if cuda: torch.cuda.synchronize()
            self.t = time.perf_counter()
        def on_step_end(self, *a, **k):
            if cuda: torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)
    tr = WRPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok, callbacks=[Clock()])
    tr.train()
    step = sorted(times[1:])[len(times[1:]) // 2]   # median, first (warm-up) step dropped
    return dict(step_s=round(step, 4), useful_tokens_per_s=round(useful / step, 1),
                peak_mem_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                deepspeed=bool(tr.is_deepspeed_enabled), world_size=tr.accelerator.num_processes)

def workers_sampling(smoke, prompts=64, new_tokens=128):
    "The source stage of one random-initialised model (Llama-3.2-1B's shape) in 1 and 2 worker processes: time and equal shards"
    import shutil, textwrap
    from transformers import LlamaConfig, LlamaForCausalLM
    from wrpo.build import build_sources
    from wrpo.testing import tiny_tokenizer
    from wrpo.workers import visible_devices
    n_gpu = len(visible_devices())
    if n_gpu < 2 and not smoke: return dict(skipped=f"{n_gpu} GPU(s): the 2-worker pass needs 2")
    d = tempfile.mkdtemp(prefix="gpu-check-workers-")
    tok = tiny_tokenizer()
    shape = SHAPES["smoke" if smoke else "llama3.2-1b"]
    LlamaForCausalLM(LlamaConfig(**shape, max_position_embeddings=4096, pad_token_id=tok.pad_token_id)).save_pretrained(f"{d}/model")
    tok.save_pretrained(f"{d}/model")
    with open(f"{d}/gpu_check_reward.py", "w") as f:
        f.write(textwrap.dedent("""
            def length(prompts, responses): return [float(len(r)) for r in responses]
        """))
    sys.path.insert(0, d)
    rows = [f"count {i} {i * 7 % 13} {i % 5}" for i in range(8 if smoke else prompts)]
    out = dict(gpus=n_gpu, prompts=len(rows))
    for w in (1, 2):
        cfg = dict(name="gpu-check-workers", sources=[dict(name="src", model=f"{d}/model", max_new_tokens=8 if smoke else new_tokens,
                                                           batch_size=8, dtype="bfloat16" if n_gpu else "float32")],
                   reward=dict(kind="callable", path="gpu_check_reward:length"), build=dict(n=2, shard_size=4 if smoke else 8, workers=w))
        t0 = time.perf_counter()
        build_sources(cfg, rows, f"{d}/w{w}")
        out[f"workers_{w}_s"] = round(time.perf_counter() - t0, 2)
    read = lambda w: [open(os.path.join(r, f)).read() for r, _, fs in sorted(os.walk(f"{d}/w{w}/samples")) for f in sorted(fs)]
    out["same_samples"] = read(1) == read(2)
    out["speedup_2_over_1"] = round(out["workers_1_s"] / out["workers_2_s"], 2)
    shutil.rmtree(d, ignore_errors=True)
    return out

def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true"); ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2); ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:   # one run inside `accelerate launch` (ZeRO-3)
        shape, method = a.child.split(":")
        res = run_one(shape, method, a.steps, a.batch, a.smoke)
        if int(os.environ.get("RANK", "0")) == 0: print("CHILD " + json.dumps(res), flush=True)
        return
    shapes = ["smoke"] if a.smoke else ["llama3.2-1b", "llama3-8b-4layers"]
    out = dict(device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", torch=torch.__version__, results={})
    for s in shapes:
        out["results"][s] = {m: run_one(s, m, a.steps, a.batch, a.smoke) for m in ("wrpo", "dpo")}
        r = out["results"][s]; r["wrpo_over_dpo_step"] = round(r["wrpo"]["step_s"] / r["dpo"]["step_s"], 3)
    zero3 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "accelerate", "deepspeed_zero3.yaml")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", zero3, "--num_processes", "1",
           "--mixed_precision", "bf16" if torch.cuda.is_available() else "no", __file__, "--child", f"{shapes[0]}:wrpo",
           "--steps", str(a.steps), "--batch", str(a.batch)] + (["--smoke"] if a.smoke else [])
    p = subprocess.run(cmd, capture_output=True, text=True)
    line = next((l for l in p.stdout.splitlines() if l.startswith("CHILD ")), None)
    out["zero3_1gpu"] = {shapes[0]: json.loads(line[6:])} if line else dict(error=(p.stderr or p.stdout)[-1500:])
    # attention of shared-prompt rows: dense 4-D mask vs per-segment SDPA (the default) vs compiled FlexAttention
    bench = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks", "attention_layouts.py")
    p = subprocess.run([sys.executable, bench, "--batch", *(["2"] if a.smoke else ["2", "8"]), "--repeats", "1" if a.smoke else "3"],
                       capture_output=True, text=True)
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    out["attention"] = lines if lines else dict(error=(p.stderr or p.stdout)[-1500:])
    try: out["build_workers"] = workers_sampling(a.smoke)
    except Exception as e: out["build_workers"] = dict(error=f"{type(e).__name__}: {e}"[-1500:])
    print(json.dumps(out))

if __name__ == "__main__": main()
