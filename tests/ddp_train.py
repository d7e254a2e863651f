"""A few WRPOTrainer steps on CPU; run alone or under `torchrun --nproc_per_node 2`. Rank 0 writes the log history."""
import json, os, sys
import torch
from wrpo.testing import cpu_args, tiny_lm, tiny_tokenizer, toy_quadruples
from wrpo.data import load_quadruples
from wrpo.trainer import WRPOTrainer

out, per_device = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
tok = tiny_tokenizer()
model = tiny_lm(tok, "llama", seed=5)
args = cpu_args(output_dir=os.path.join(out, "run"), max_steps=4, alpha=0.5, beta=0.5, learning_rate=3e-3,
                per_device_train_batch_size=per_device, dataloader_drop_last=True)
tr = WRPOTrainer(model=model, args=args, train_dataset=load_quadruples(toy_quadruples(32)), processing_class=tok)
tr.train()
if tr.accelerator.is_main_process:
    first = next(model.parameters()).detach().flatten()[:8].tolist()
    json.dump({"world_size": tr.accelerator.num_processes, "log": tr.state.log_history, "param": first},
              open(os.path.join(out, "result.json"), "w"))
# Shut the process group down explicitly: left to interpreter exit, gloo's threads can abort a rank
# ("terminate called without an active exception") after training has finished.
import torch.distributed as dist
if dist.is_available() and dist.is_initialized():
    dist.barrier(); dist.destroy_process_group()
