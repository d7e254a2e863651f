"Fault injection for the toy-world zoo cache: a build killed while writing a model leaves no half model behind."
import os, signal, subprocess, sys, textwrap, time
from pathlib import Path

from wrpo.toyworld import WORLD, build_zoo, load_model, zoo_dir

KILLED_BUILD = textwrap.dedent("""
    import sys, time
    import wrpo.toyworld as tw
    from transformers import PreTrainedTokenizerFast
    calls = []
    orig = PreTrainedTokenizerFast.save_pretrained
    def slow_save(self, *a, **k):  # the second model hangs half-written: weights saved, tokenizer not yet
        calls.append(1)
        if len(calls) == 2:
            print("HANGING", flush=True); time.sleep(600)
        return orig(self, *a, **k)
    PreTrainedTokenizerFast.save_pretrained = slow_save
    tw.build_zoo("smoke", cache_dir=sys.argv[1], progress=False)
""")

def test_killed_build_leaves_no_half_model(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = []   # other libraries may print first (DeepSpeed announces its CPU accelerator on stdout)
        while not lines or lines[-1] != "HANGING":
            line = p.stdout.readline()
            assert line, f"the build ended before it hung: {lines}"
            lines.append(line.strip())
        p.send_signal(signal.SIGKILL); p.wait(30)
    finally:
        if p.poll() is None: p.kill()
    root = zoo_dir("smoke", tmp_path)
    names = list(WORLD["models"])
    visible = sorted(x.name for x in root.iterdir() if not x.name.startswith("."))
    assert visible == [names[0]]  # only the finished model is visible
    half = [x for x in root.iterdir() if x.name.startswith(f".tmp-{names[1]}-")]   # wrpo.files.temp_path names
    assert len(half) == 1 and not (half[0] / "toyworld.json").exists()
    t0 = time.time()
    before = os.path.getmtime(root / names[0] / "toyworld.json")
    paths = build_zoo("smoke", cache_dir=tmp_path, progress=False)
    assert os.path.getmtime(root / names[0] / "toyworld.json") == before  # not retrained
    for name, path in paths.items():
        model, tok = load_model(path)
        assert (Path(path) / "toyworld.json").exists() and model.config.vocab_size == len(tok)
