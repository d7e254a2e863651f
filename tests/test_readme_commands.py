"""Every `wrpo ...` command the README shows parses with the one `wrpo` parser as written (placeholders filled in), and the
cheap ones run for real; `bash scripts/...` commands name scripts that exist."""
import re, shlex, subprocess, sys, os
from pathlib import Path
import pytest
from wrpo.cli import parser

from conftest import ROOT
PLACEHOLDERS = {"CFG": "ci", "P": "prompts.jsonl", "D": "runs/build", "RUN_DIR": "runs/x", "NAME": "wrpo", "COMMAND": "run"}

def readme_commands():
    text = (ROOT / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S): cmds += [l.split("#")[0].strip() for l in block.splitlines()]
    cmds += re.findall(r"`(wrpo [^`]+)`", text)
    out = []
    for c in cmds:
        for part in re.split(r"&&|;", c):
            part = part.strip()
            if part.startswith(("wrpo ", "bash ")): out.append(part)
    return sorted(set(out))

CMDS = readme_commands()

def test_the_readme_shows_commands():
    assert any(c.startswith("wrpo build") for c in CMDS) and any(c.startswith("wrpo run") for c in CMDS)
    assert "bash scripts/demo.sh" in CMDS and "bash scripts/test.sh" in CMDS

@pytest.mark.parametrize("cmd", [c for c in CMDS if c.startswith("wrpo ")])
def test_wrpo_command_parses_as_written(cmd):
    args = [PLACEHOLDERS.get(a, a) for a in shlex.split(cmd)[1:]]
    sub = next(a for a in parser()._actions if a.dest == "cmd").choices
    if len(args) == 1 and not args[0].startswith("-"):   # prose naming a command (`wrpo run`): the command exists
        assert args[0] in sub, (cmd, sorted(sub)); return
    if "--help" in args:             # help prints and exits 0
        with pytest.raises(SystemExit) as e: parser().parse_args(args)
        assert e.value.code == 0, cmd; return
    parser().parse_args(args)        # argparse exits (SystemExit) on anything it does not accept

@pytest.mark.parametrize("cmd", [c for c in CMDS if c.startswith("bash ")])
def test_scripts_exist(cmd, tmp_path):
    "A script of the repository, or one an earlier README command writes (`wrpo slurm ... --write DIR`): run that command, check the script"
    script = shlex.split(cmd)[1]
    if (ROOT / script).is_file(): return
    writers = [c for c in CMDS if c.startswith("wrpo slurm ") and "--write" in c
               and script.startswith(shlex.split(c)[shlex.split(c).index("--write") + 1].rstrip("/") + "/")]
    assert writers, f"{cmd}: no such script, and no README command writes it"
    r = subprocess.run([sys.executable, "-m", "wrpo.cli", *shlex.split(writers[0])[1:]], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / script).is_file(), (writers[0], sorted(map(str, tmp_path.rglob("*"))))
    assert subprocess.run(["bash", "-n", str(tmp_path / script)]).returncode == 0   # a script bash can read

@pytest.mark.parametrize("cmd", [c for c in CMDS if c.startswith("wrpo validate ")])
def test_validate_commands_run(cmd):
    r = subprocess.run([sys.executable, "-m", "wrpo.cli", *shlex.split(cmd)[1:]], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
