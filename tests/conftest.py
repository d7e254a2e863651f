"""Shared test settings: the repository's paths, the `wrpo` command line and the environment of every spawned `wrpo`.
Test modules import the constants (`from conftest import ROOT, ENV`: pytest puts this folder on sys.path) or take the
fixtures. Kept to the standard library and pytest: the vLLM phase collects it from its own environment too."""
import os, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]                 # the repository
CONFIGS = ROOT / "configs"                                  # the shipped configs (also installed as wrpo.configs)
CI = str(CONFIGS / "ci.yaml")                               # the configuration most tests run
WRPO = [sys.executable, "-m", "wrpo.cli"]                   # `wrpo` as a subprocess (for what must run in a process of its own)
# every spawned wrpo: offline, quiet tokenizers, trl's experimental notice off
ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}

@pytest.fixture
def one_thread():
    "Tiny models: one torch thread is as fast, and does not stall when other jobs share the two cores"
    import torch
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.fixture
def wrpo_main(capsys):
    "Run `wrpo ARGS` in this process: (exit code, stdout, stderr)"
    from wrpo.cli import main
    def run(*args):
        rc = main([str(a) for a in args])
        out = capsys.readouterr()
        return rc, out.out, out.err
    return run
