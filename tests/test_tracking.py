"""Experiment tracking through transformers' own `report_to` (wrpo.training): Target-SFT and two tiny variants train
the way a pipeline run trains them (`sft_stage`, `train_variant`), offline, and what TensorBoard's event files and
W&B's offline run files hold is read back with the trackers' own readers and compared, step by step, with the training
logs `logs/<name>.json` (the alpha schedule, the rewards, the margins and accuracies)."""
import json, os, struct, zlib
from pathlib import Path
from types import SimpleNamespace
import pytest
from datasets import Dataset
from wrpo.config import ConfigError, load_config
from wrpo.data import load_quadruples
from wrpo.testing import tiny_lm, tiny_tokenizer, toy_quadruples
from wrpo.training import sft_stage, train_variant

WRPO_KEYS = ["alpha", "rewards/source_chosen", "rewards/target_chosen", "rewards/rejected", "margins/hybrid", "margins/onpolicy",
             "margins/weighted", "accuracies/hybrid", "accuracies/onpolicy", "accuracies/weighted", "loss"]
TRACKER_ENV = ("TENSORBOARD_LOGGING_DIR", "WANDB_RUN_GROUP", "WANDB_PROJECT", "WANDB_DIR", "WANDB_NAME", "WANDB_RUN_ID")

class TinyRun:
    "What sft_stage and train_variant read of a `wrpo.pipeline.Run`: the config, the directory, the target"
    def __init__(self, cfg, d, target): self.cfg, self.dir, self.resolved = cfg, Path(d), SimpleNamespace(target=SimpleNamespace(model=str(target)))
    def path(self, *parts): return self.dir.joinpath(*parts)

def tiny_run(tmp_path, report_to, steps=4):
    "A run directory named after its config ('ci') holding the SFT data and the training quadruples; two variants, no checkpoints"
    cfg = load_config("ci")
    cpu = dict(use_cpu=True, bf16=False, disable_tqdm=True, dataloader_num_workers=0, lr_scheduler_type="constant", seed=0, max_steps=steps,
               per_device_train_batch_size=2, logging_steps=1, report_to=report_to)
    cfg.train.sft = dict(learning_rate=1e-3, **cpu)
    cfg.train.common = dict(beta=0.1, learning_rate=1e-3, max_length=64, precompute_ref_log_probs=True, **cpu)
    cfg.train.variants = {"dpo": dict(alpha=0.0, alpha_schedule="static"), "wrpo": dict(alpha=0.5, alpha_schedule="dynamic")}
    run = TinyRun(cfg, tmp_path / "ci", tmp_path / "target")
    tiny_lm(tiny_tokenizer("char"), d=32, layers=1, heads=2, path=tmp_path / "target")
    q = load_quadruples(toy_quadruples(8))
    q.save_to_disk(str(run.path("build", "sft"))); q.save_to_disk(str(run.path("data", "train")))
    return run

def trained(run, name):
    "(the training log's steps, as logs/<name>.json holds them) after training `name` ('target_sft' or a variant)"
    sft_stage(run) if name == "target_sft" else train_variant(run, name)
    return [h for h in json.loads(run.path("logs", f"{name}.json").read_text()) if "loss" in h]

@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    "No tracker setting of this machine's: the defaults wrpo fills in are the ones tested"
    for k in TRACKER_ENV: monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline"); monkeypatch.setenv("WANDB_SILENT", "true")
    for k in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"): monkeypatch.setenv(k, str(tmp_path / "wandb-home" / k.lower()))

def test_default_reports_nowhere(tmp_path, clean_env, one_thread):
    "report_to left out: the run directory holds what it always held (no tensorboard/, wandb/ or runs/ folder)"
    run = tiny_run(tmp_path, "none", steps=2)
    del run.cfg.train.common["report_to"], run.cfg.train.sft["report_to"]
    trained(run, "target_sft"); trained(run, "wrpo")
    assert sorted(p.name for p in run.dir.iterdir()) == ["build", "checkpoints", "data", "logs", "models"]
    assert not list(run.dir.rglob("events.out.tfevents*")) and not list(run.dir.rglob("*.wandb"))

def scalars(logdir):
    "{tag: [(step, value)]} of every scalar in a TensorBoard log directory, read with TensorBoard's own reader"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}

def test_tensorboard_holds_the_training_logs_series(tmp_path, clean_env, one_thread):
    run = tiny_run(tmp_path, ["tensorboard"])
    logs = {n: trained(run, n) for n in ("target_sft", "dpo", "wrpo")}
    assert sorted(p.name for p in run.path("tensorboard").iterdir()) == ["dpo", "target_sft", "wrpo"]   # one log directory per stage
    assert not list(run.path("checkpoints").rglob("events.out.tfevents*"))   # not transformers' default <output_dir>/runs/<date>
    assert not any(os.environ.get(k) for k in TRACKER_ENV)                   # put back after each stage
    for name in ("dpo", "wrpo"):
        tb, log = scalars(run.path("tensorboard", name)), logs[name]
        assert [h["step"] for h in log] == [1, 2, 3, 4]
        for k in WRPO_KEYS:   # step by step, under transformers' train/ prefix (TensorBoard keeps float32)
            assert [s for s, _ in tb[f"train/{k}"]] == [h["step"] for h in log], k
            assert [v for _, v in tb[f"train/{k}"]] == pytest.approx([h[k] for h in log], rel=1e-6, abs=1e-7), k
    # the schedule itself, computed here: static 0 for dpo; dynamic for wrpo, linear from 0 at the first step to 0.5 at the last (step 4)
    assert [v for _, v in scalars(run.path("tensorboard", "dpo"))["train/alpha"]] == [0.0] * 4
    assert [v for _, v in scalars(run.path("tensorboard", "wrpo"))["train/alpha"]] == pytest.approx([0.5 * (t - 1) / 3 for t in (1, 2, 3, 4)])
    wrpo = logs["wrpo"]   # the weighted margin mixes the two margins with that step's alpha
    assert [h["margins/weighted"] for h in wrpo] == pytest.approx([h["alpha"] * h["margins/hybrid"] + (1 - h["alpha"]) * h["margins/onpolicy"] for h in wrpo], abs=1e-5)
    sft = scalars(run.path("tensorboard", "target_sft"))
    assert [v for _, v in sft["train/loss"]] == pytest.approx([h["loss"] for h in logs["target_sft"]], rel=1e-6)

def wandb_records(path):
    "Every record of a W&B transaction log (`run-*.wandb`): its LevelDB-style log format (7-byte file header, 32 KiB blocks of chunks with a CRC-32 each), parsed with wandb's own protobuf `Record`"
    from wandb.proto.wandb_internal_pb2 import Record
    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), (ident, magic, version)
    out, buf, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7: pos += block - pos % block; continue   # the tail of a block too short for a header is padding
        crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + n]; pos += 7 + n
        if kind == 0 and n == 0: continue
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"{path}: bad checksum at {pos}"
        buf = chunk if kind in (1, 2) else buf + chunk   # FULL, FIRST start a record; MIDDLE, LAST continue it
        if kind in (1, 4):
            r = Record(); r.ParseFromString(buf); out.append(r); buf = b""
    return out

def wandb_run(path):
    "(the run record: name, group, project) and the history rows {key: value} of an offline W&B run's transaction log"
    recs = wandb_records(path)
    run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    rows = [{(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            for r in recs if r.WhichOneof("record_type") == "history"]
    return run, rows

def test_wandb_offline_one_run_per_variant_grouped(tmp_path, clean_env, one_thread):
    run = tiny_run(tmp_path, ["wandb"], steps=3)
    logs = {n: trained(run, n) for n in ("target_sft", "dpo", "wrpo")}
    files = sorted(run.path("wandb").glob("offline-run-*/run-*.wandb"))   # WANDB_DIR: the run directory
    assert len(files) == 3, files                                         # each stage finished its own run
    runs = {r.display_name: (r, rows) for r, rows in map(wandb_run, files)}
    assert sorted(runs) == ["ci/dpo", "ci/target_sft", "ci/wrpo"]
    assert {(r.run_group, r.project) for r, _ in runs.values()} == {("ci", "wrpo")}
    assert not any(os.environ.get(k) for k in TRACKER_ENV)
    for name in ("dpo", "wrpo"):
        rows = [h for h in runs[f"ci/{name}"][1] if "train/alpha" in h]
        log = logs[name]
        assert [h["train/global_step"] for h in rows] == [h["step"] for h in log] == [1, 2, 3]
        for k in WRPO_KEYS:
            assert [h[f"train/{k}"] for h in rows] == pytest.approx([h[k] for h in log], rel=1e-9), k
    assert [h["train/alpha"] for h in runs["ci/wrpo"][1] if "train/alpha" in h] == pytest.approx([0.0, 0.25, 0.5])   # 0 to 0.5 over 3 steps
    assert [h["train/loss"] for h in runs["ci/target_sft"][1] if "train/loss" in h] == pytest.approx([h["loss"] for h in logs["target_sft"]])

def test_the_users_wandb_settings_win(tmp_path, clean_env, one_thread, monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "mine"); monkeypatch.setenv("WANDB_RUN_GROUP", "sweep-7"); monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    run = tiny_run(tmp_path, "wandb", steps=1)
    run.cfg.train.sft["run_name"] = "sft-a"
    trained(run, "target_sft")
    [f] = (tmp_path / "wb").glob("wandb/offline-run-*/run-*.wandb")
    r, _ = wandb_run(f)
    assert (r.display_name, r.run_group, r.project) == ("sft-a", "sweep-7", "mine")
    assert not run.path("wandb").exists()

@pytest.mark.parametrize("key, value, message", [
    ("train.common.report_to", "tensorbord", "train.variants.dpo (with train.common).report_to: 'tensorbord' is not an integration transformers reports to (did you mean 'tensorboard'?)"),
    ("train.sft.report_to", "['wandb','nope']", "train.sft.report_to: 'nope' is not an integration transformers reports to"),
    ("train.variants.wrpo.report_to", "mlflow", "train.variants.wrpo (with train.common).report_to: 'mlflow' needs the mlflow package"),
])
def test_bad_report_to_fails_when_the_config_loads(key, value, message):
    from transformers.integrations import integration_utils as iu
    if "mlflow" in message and iu.is_mlflow_available(): pytest.skip("mlflow is installed here")
    with pytest.raises(ConfigError, match=None) as e: load_config("ci", [f"{key}={value}"], deep=True)
    assert message in str(e.value), str(e.value)
