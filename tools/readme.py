"""Render README.md from nbs/index.ipynb (nbdev-readme needs quarto, which is not installable offline).

Markdown cells are copied as they are; code cells are shown as fenced Python unless they carry `#| hide`.
`--check` fails when README.md differs from what the notebook renders to.
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def render(nb_path=ROOT/"nbs"/"index.ipynb"):
    nb = json.loads(Path(nb_path).read_text())
    parts = ["<!-- generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file -->"]
    for cell in nb["cells"]:
        src = "".join(cell["source"]).strip()
        if not src: continue
        if cell["cell_type"] == "markdown": parts.append(src)
        elif cell["cell_type"] == "code":
            lines = src.splitlines()
            if any(l.strip().startswith("#| hide") for l in lines): continue
            code = "\n".join(l for l in lines if not l.startswith("#|")).strip()
            if code: parts.append(f"```python\n{code}\n```")
    return "\n\n".join(parts) + "\n"

if __name__ == "__main__":
    text, readme = render(), ROOT/"README.md"
    if "--check" in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit("README.md is out of date with nbs/index.ipynb: run `python tools/readme.py`")
        print("README.md matches nbs/index.ipynb")
    else:
        readme.write_text(text); print(f"wrote {readme}")
