"""JupyterLab in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium) opens
the pipeline notebook at `ci` size, runs all cells, and the page shows the progress bars as widgets and the results
table; a figure notebook run after it shows its figure. The page is saved as a screenshot (WRPO_SCREENSHOT_DIR, else the
test's folder; the README's figures/jupyterlab.png is one). tests/test_jupyterlab.py is the fast check of the same
through the server's REST API and the kernel's websocket."""
import json, os, shutil, time
from pathlib import Path
import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow   # the full tier (scripts/test.sh installs the browser); about 3 minutes here
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

def _notebook(src:Path, dest:Path, params:dict):
    "Copy a pipeline notebook with its parameters cell set, as a user edits it before running"
    nb = json.loads(src.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    cell["source"] = [f"{k} = {v!r}\n" for k, v in params.items()]
    nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}   # as JupyterLab saves it
    dest.write_text(json.dumps(nb))

def _wait(drv, js:str, timeout:float, what:str, every:float=2.0):
    t0 = time.time()
    while True:
        v = drv.execute_script(js)
        if v: return v
        if time.time() - t0 > timeout:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s; the page says:\n" + drv.execute_script("return document.body.innerText")[-3000:])
        time.sleep(every)

DISMISS = ("[...document.querySelectorAll('.jp-toast-button, .Toastify button')].filter(b => b.innerText.trim() === 'No')"
           ".forEach(b => b.click());")   # the news toast a first start of JupyterLab asks
def KERNEL_IDLE(name):
    "JS: true once notebook `name` is the current tab and its kernel is idle (a 'Select Kernel' dialog is accepted)"
    return ("const d = document.querySelector('.jp-Dialog .jp-mod-accept'); if (d) d.click();"
            "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            f"if (!w || !w.context || w.context.path !== {name!r}) {{ if (window.jupyterapp) window.jupyterapp.commands.execute('docmanager:open', {{path: {name!r}}}); return false; }}"
            "const k = w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
            "return !!(k && k.status === 'idle')")
ERRORS = "return document.querySelectorAll('.jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"] .ansi-red-fg, .jp-OutputArea-output.jp-mod-error').length"

def _run_all(drv, lab, name:str, done:str, timeout:float):
    "Open notebook `name`, wait for its kernel, run all cells, wait until the page shows `done` (or an error)"
    drv.get(f"{lab.url}/lab/tree/{name}?token={lab.token}")
    _wait(drv, KERNEL_IDLE(name), 180, f"{name}: a kernel")
    drv.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    _wait(drv, DISMISS + f"return [...document.querySelectorAll('.jp-OutputArea-output')].some(o => o.innerText.includes({done!r})) || "
                   "document.querySelectorAll('.jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"] .ansi-red-fg').length > 0",
          timeout, f"{name}: {done!r} in an output")   # in an output: the cell's own source says it too
    _wait(drv, KERNEL_IDLE(name), 120, f"{name}: the kernel idle again")

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and DRIVER):
        pytest.fail("no chromium / chromedriver: install Debian's chromium and chromium-driver (scripts/browser.sh; scripts/test.sh does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from test_jupyterlab import Lab
    root = tmp_path_factory.mktemp("browser")
    pipes = ROOT / "nbs" / "pipelines"
    _notebook(pipes / "fuse.ipynb", root / "fuse.ipynb", dict(config="ci", run_dir="runs/browser", overrides=[], redo=False, progress="widgets"))
    _notebook(pipes / "fig_reward_margins.ipynb", root / "fig_reward_margins.ipynb", dict(run_dir="runs/browser", fig_dir="figs", sweep_dir=""))
    # every cell in the page (JupyterLab 4 otherwise renders only the cells in view), as a user's setting
    s = root / ".jupyter" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    s.parent.mkdir(parents=True); s.write_text(json.dumps({"windowingMode": "none"}))
    lab = Lab(root, extra=["--LabApp.expose_app_in_browser=True"])   # window.jupyterapp: the commands a user clicks
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1100", "--user-data-dir=" + str(tmp_path_factory.mktemp("chrome"))):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    shots = Path(os.environ.get("WRPO_SCREENSHOT_DIR") or root)
    try:
        t0 = time.time()
        _run_all(drv, lab, "fuse.ipynb", "pipeline finished in", 1200)
        page = dict(fuse_text=drv.execute_script("return document.body.innerText"),
                    progress=drv.execute_script("return document.querySelectorAll('.jp-OutputArea-output .widget-hprogress, .jp-OutputArea-output .widget-progress').length"),
                    bars_done=drv.execute_script("return [...document.querySelectorAll('.jp-OutputArea-output .widget-hprogress .progress-bar, .jp-OutputArea-output .widget-progress .progress-bar')].filter(b => b.style.width === '100%').length"),
                    tables=drv.execute_script("return [...document.querySelectorAll('.jp-OutputArea-output.jp-RenderedMarkdown table, .jp-OutputArea-output .jp-RenderedMarkdown table')].map(t => t.innerText)"),
                    errors=drv.execute_script(ERRORS), fuse_s=time.time() - t0)
        drv.execute_script(DISMISS + "const t = [...document.querySelectorAll('.jp-OutputArea-output.jp-RenderedMarkdown table')].pop();"
                           "if (t) t.scrollIntoView({block: 'end'})")
        time.sleep(2)   # what a user sees at the end: the last stages and the results table
        shots.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(shots / "jupyterlab.png"))
        _run_all(drv, lab, "fig_reward_margins.ipynb", "wrote", 300)
        page.update(images=drv.execute_script("return [...document.querySelectorAll('.jp-OutputArea-output img')].map(i => [i.naturalWidth, i.naturalHeight])"),
                    fig_errors=drv.execute_script(ERRORS))
        drv.save_screenshot(str(shots / "jupyterlab_figure.png"))
        page["shots"] = shots
        yield page
    finally:
        drv.quit(); lab.close()

def test_the_pipeline_notebook_runs_in_the_browser(browser):
    print(f"fuse.ipynb in Chromium: {browser['fuse_s']:.0f} s")
    assert browser["errors"] == 0, browser["fuse_text"][-3000:]
    assert "run 'ci' in" in browser["fuse_text"] and "pipeline finished in" in browser["fuse_text"]
    for noise in ("IProgress not found", "TqdmWarning", "Traceback"): assert noise not in browser["fuse_text"], noise

def test_progress_bars_are_widgets(browser):
    "tqdm's bars are drawn by ipywidgets (not text), and the finished ones are full"
    assert browser["progress"] >= 3, browser["progress"]
    assert browser["bars_done"] >= 3, browser["bars_done"]

def test_the_results_table_renders(browser):
    tables = [t for t in browser["tables"] if "accuracy" in t and "wrpo" in t]
    assert tables, browser["tables"]
    assert all(m in tables[-1] for m in ("target_sft", "dpo", "hybrid_dpo", "wrpo_static")), tables[-1]

def test_the_figure_renders(browser):
    assert browser["fig_errors"] == 0
    assert browser["images"] and all(w > 300 and h > 200 for w, h in browser["images"]), browser["images"]

def test_screenshots_are_pngs(browser):
    for name in ("jupyterlab.png", "jupyterlab_figure.png"):
        b = (browser["shots"] / name).read_bytes()
        assert b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) > 20_000, (name, len(b))
