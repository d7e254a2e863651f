#!/usr/bin/env python
"""Check that wrpo's extras resolve against wrpo's own pins, without installing them.

For each extra combination (default: `vllm` and `vllm,deepspeed`) this reads the declared requirements of the
releases the extras name (metadata only: `pip install --dry-run --no-deps --report`, no big download), plus those of
wrpo's trainer stack (trl, peft, accelerate, datasets: they constrain transformers/torch too), and for every package
that two or more of them constrain checks that at least one version the registry serves (`pip index versions`)
satisfies all their specifiers. Prints a table; exits 1 on a conflict.

    python scripts/check_extras.py                         # the checkout's pyproject.toml
    python scripts/check_extras.py --pyproject OLD.toml    # e.g. `git show REV:pyproject.toml > OLD.toml`

A full resolver dry run (`pip install --dry-run "wrpo[vllm]"`) is no substitute here: it needs every transitive
release on the registry (it stops at packages the reachable mirror does not serve yet) and is far slower.
"""
from __future__ import annotations
import argparse, json, re, subprocess, sys, tempfile
from functools import lru_cache
from pathlib import Path
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version, InvalidVersion
try: import tomllib
except ImportError: import tomli as tomllib  # Python 3.10

ROOT = Path(__file__).resolve().parents[1]
STACK = ("trl", "peft", "accelerate", "datasets")  # wrpo dependencies whose own pins matter for the extras
PYTHONS = [Version(f"3.{m}") for m in range(9, 16)]

def pip(*args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=check)

@lru_cache(None)
def served(name: str) -> tuple[Version, ...]:
    "Versions of `name` the registry serves, newest first"
    r = pip("index", "versions", name, check=False)
    m = re.search(r"Available versions:\s*(.*)", r.stdout)
    if not m: raise SystemExit(f"check_extras: `pip index versions {name}` found nothing:\n{r.stdout}{r.stderr}")
    out = []
    for v in m.group(1).split(","):
        try: out.append(Version(v.strip()))
        except InvalidVersion: pass
    return tuple(sorted(set(out), reverse=True))

@lru_cache(None)
def metadata(name: str, version: Version) -> dict:
    "`requires_dist` and `requires_python` of one release, read by pip without installing (metadata only)"
    with tempfile.TemporaryDirectory() as td:
        rep = Path(td) / "r.json"
        r = pip("install", "-q", "--dry-run", "--no-deps", "--ignore-installed", "--report", str(rep), f"{name}=={version}", check=False)
        if r.returncode: raise SystemExit(f"check_extras: cannot read the metadata of {name}=={version}:\n{r.stderr[-2000:]}")
        m = json.loads(rep.read_text())["install"][0]["metadata"]
    return dict(requires=m.get("requires_dist") or [], python=m.get("requires_python") or "")

def active(reqs, extras=()) -> dict[str, SpecifierSet]:
    "Requirements that apply on this platform (no extras of the package itself): canonical name -> specifier"
    env, out = default_environment(), {}
    for r in map(Requirement, reqs):
        if r.marker and not any(r.marker.evaluate({**env, "extra": e}) for e in (("",) + tuple(extras))): continue
        n = canonicalize_name(r.name)
        out[n] = out.get(n, SpecifierSet()) & r.specifier
    return out

def pick(name: str, spec: SpecifierSet) -> list[Version]:
    "Served versions of `name` allowed by `spec`, newest first"
    return [v for v in served(name) if spec.contains(v, prereleases=False)] or [v for v in served(name) if v in spec]

def check_combo(proj: dict, extras: list[str], stack: dict) -> bool:
    "Check one extra combination; print its table; True when it resolves"
    wrpo = active(proj["dependencies"])
    opt = proj.get("optional-dependencies", {})
    named = {canonicalize_name(Requirement(r).name): Requirement(r).specifier for e in extras for r in opt[e]}
    # choose, newest first, the first release of each extra package that agrees with wrpo (what pip would try first)
    print(f"\n== wrpo[{','.join(extras)}] ==")
    choice, ok_all = {}, True
    for name, spec in named.items():
        cands = pick(name, spec)
        if not cands: print(f"  {name}{spec}: the registry serves no such release"); return False
        for v in cands[:3]:  # the newest few: an older patch release rarely loosens a pin, and each read costs seconds
            choice[name] = v
            if conflicts(wrpo, stack, choice, quiet=True) == 0: break
        else: choice[name] = cands[0]  # none agrees: show the newest one's conflicts
        print(f"  {name}{spec}: served {', '.join(map(str, cands[:6]))}{' ...' if len(cands) > 6 else ''} -> checking {name}=={choice[name]}")
    n = conflicts(wrpo, stack, choice, quiet=False, py=proj.get("requires-python", ""))
    print(f"  => {'RESOLVES' if n == 0 else f'CONFLICT ({n} package(s))'}")
    return n == 0

def conflicts(wrpo, stack, choice, quiet=True, py="") -> int:
    "Number of packages constrained by >= 2 parties that no served version satisfies (prints the table unless quiet)"
    parties = {"wrpo": wrpo, **{f"{n}=={v}": active(metadata(n, v)["requires"]) for n, v in stack.items()},
               **{f"{n}=={v}": active(metadata(n, v)["requires"]) for n, v in choice.items()}}
    # the chosen releases themselves are constraints too (e.g. wrpo pins nothing on vllm, but trl may pin accelerate)
    for n, v in {**stack, **choice}.items(): parties.setdefault(f"{n}=={v}", {})
    names = sorted({p for reqs in parties.values() for p in reqs})
    bad, rows = 0, []
    for p in names:
        who = {k: reqs[p] for k, reqs in parties.items() if p in reqs}
        if p in stack or p in choice: who[f"chosen {p}"] = SpecifierSet(f"=={(stack | choice)[p]}")
        if len(who) < 2: continue
        if all(not str(s) for s in who.values()): continue  # nobody restricts it
        joint = SpecifierSet()
        for s in who.values(): joint &= s
        ok = pick(p, joint)
        bad += not ok
        rows.append((p, "; ".join(f"{k}: {s or 'any'}" for k, s in who.items()), str(ok[0]) if ok else "NONE"))
    if py:  # Python versions every release accepts
        pys = {"wrpo": SpecifierSet(py), **{f"{n}=={v}": SpecifierSet(metadata(n, v)["python"]) for n, v in {**stack, **choice}.items()}}
        joint = SpecifierSet()
        for s in pys.values(): joint &= s
        ok = [v for v in PYTHONS if v in joint]
        bad += not ok
        rows.append(("python", "; ".join(f"{k}: {s or 'any'}" for k, s in pys.items()), f"{ok[0]}..{ok[-1]}" if ok else "NONE"))
    if not quiet:
        w = max(len(r[0]) for r in rows)
        print(f"  {'package':<{w}}  {'newest OK':<12} constraints")
        for p, c, ok in rows: print(f"  {p:<{w}}  {ok:<12} {c}{'   <-- CONFLICT' if ok == 'NONE' else ''}")
    return bad

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pyproject", default=str(ROOT / "pyproject.toml"))
    ap.add_argument("--extras", nargs="*", default=["vllm", "vllm,deepspeed"], help="comma-separated extra combinations")
    a = ap.parse_args(argv)
    proj = tomllib.loads(Path(a.pyproject).read_text())["project"]
    wrpo = active(proj["dependencies"])
    # the trainer stack at the newest release wrpo admits (what a fresh install gets)
    stack = {}
    for n in STACK:
        c = pick(n, wrpo.get(n, SpecifierSet()))
        if not c: raise SystemExit(f"check_extras: the registry serves no {n}{wrpo.get(n)}")
        stack[n] = c[0]
    print(f"check_extras: {a.pyproject}; wrpo's stack at its newest admitted releases: "
          + ", ".join(f"{n} {v}" for n, v in stack.items()))
    res = [check_combo(proj, [e.strip() for e in combo.split(",")], stack) for combo in a.extras]
    if not all(res):
        print("\ncheck_extras: FAILED: an extra cannot be installed with wrpo's pins (see CONFLICT above)"); return 1
    print("\ncheck_extras: all extras resolve"); return 0

if __name__ == "__main__": sys.exit(main())
