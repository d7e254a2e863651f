"""A few WRPOTrainer (or SFT) steps on CPU: run alone, or under `accelerate launch` with the shipped DeepSpeed ZeRO-3 config
on 2 processes. Rank 0 writes the log history. Usage: zero3_train.py OUT_DIR PER_DEVICE_BATCH [wrpo|sft] [--resume]"""
import json, os, sys, time
import torch
from transformers import TrainerCallback
from wrpo.testing import tiny_lm, tiny_tokenizer, toy_quadruples
from wrpo.data import load_quadruples
from wrpo.trainer import hardware_kwargs
from wrpo.training import last_checkpoint, training_log

out, per_device, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
resume = "--resume" in sys.argv
torch.set_num_threads(1)

class SlowAfterSave(TrainerCallback):
    "Test hooks: record the step training starts from; linger after each checkpoint so a test can kill the run between two."
    start_step = None
    def on_train_begin(self, args, state, control, **kw): SlowAfterSave.start_step = state.global_step
    def on_save(self, args, state, control, **kw):
        if os.environ.get("WRPO_TEST_SLOW_AFTER_SAVE"): time.sleep(float(os.environ["WRPO_TEST_SLOW_AFTER_SAVE"]))

tok = tiny_tokenizer()
model = tiny_lm(tok, "llama", seed=5)
common = dict(output_dir=os.path.join(out, "run"), max_steps=4, learning_rate=3e-3, per_device_train_batch_size=per_device,
              logging_steps=1, report_to="none", seed=0, disable_tqdm=True, dataloader_drop_last=True, lr_scheduler_type="constant",
              save_strategy="steps", save_steps=2)
if kind == "wrpo":
    from wrpo.trainer import WRPOConfig, WRPOTrainer
    args = WRPOConfig(**hardware_kwargs(dict(common, alpha=0.5, beta=0.5, precompute_ref_log_probs=True)))
    data = load_quadruples(toy_quadruples(32))             # in memory, as load_quadruples("file.jsonl") gives it
    tr = WRPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[SlowAfterSave()])
else:
    from datasets import Dataset
    from trl import SFTConfig
    from wrpo.trainer import sft_train
    rows = [dict(prompt=r["prompt"], completion=r["source_chosen"]) for r in toy_quadruples(32)]
    args = SFTConfig(**hardware_kwargs(dict(common, completion_only_loss=True)))
    from trl import SFTTrainer
    tr = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok, callbacks=[SlowAfterSave()])
tr.train(resume_from_checkpoint=last_checkpoint(args.output_dir) if resume else None)
if tr.accelerator.is_main_process:
    json.dump({"world_size": tr.accelerator.num_processes, "start_step": SlowAfterSave.start_step, "deepspeed": bool(tr.is_deepspeed_enabled), "log": training_log(tr.state.log_history)},
              open(os.path.join(out, "result.json"), "w"))
import torch.distributed as dist
if dist.is_available() and dist.is_initialized():
    dist.barrier(); dist.destroy_process_group()
