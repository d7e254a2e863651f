"""What a JupyterLab user does: start JupyterLab, open the pipeline notebook, set its parameters, run it cell by cell in a
kernel the server started, and watch the progress bars render as widgets. Driven through the server's REST API and the
kernel's websocket channels: the messages a browser exchanges with JupyterLab. The fast check; tests/test_browser.py does
the same in a real browser (headless Chromium)."""
import json, os, shutil, socket, subprocess, sys, time, urllib.request, uuid
from pathlib import Path
import pytest

pytestmark = pytest.mark.slow   # the full tier only (scripts/test.sh); --fast deselects it
import websocket   # websocket-client, a dependency of jupyter_server

from conftest import ROOT
NOTEBOOK = ROOT / "nbs" / "pipelines" / "fuse.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"
# The notebook runs at `ci` size (the smallest shipped config: about 80 s here with the shipped zoo, which
# tests/test_pipeline.py shares). WRPO_LAB_SIZE=smoke runs it with these overrides instead (the untrained "smoke" zoo,
# 90 prompts, one epoch: the same cells, about 60 s), for a quick check.
SMOKE = ["name=lab", "pipeline.models.kwargs.size=smoke", "pipeline.prompts.kwargs.n=90", "eval.prompts.kwargs.n_per_skill=5",
         "train.sft.num_train_epochs=1", "train.common.num_train_epochs=1"]

def _free_port()->int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

class Lab:
    "A JupyterLab server on 127.0.0.1 with a token, and the REST calls a browser makes."
    def __init__(self, root:Path, extra=()):
        self.root, self.port, self.token = root, _free_port(), uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(root / "server.log", "w")
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".jupyter"), "JUPYTER_RUNTIME_DIR": str(root / ".runtime")}
        self.proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                                      "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                                      f"--ServerApp.root_dir={root}", *(["--allow-root"] if os.geteuid() == 0 else []), *extra],   # CI containers run as root
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        t0 = time.time()
        while True:
            try: self.api("GET", "/api/status"); break
            except OSError:
                if self.proc.poll() is not None or time.time() - t0 > 120: raise RuntimeError(f"JupyterLab did not start:\n{self.server_log()}")
                time.sleep(0.5)

    def api(self, method:str, path:str, body=None, raw:bool=False):
        req = urllib.request.Request(self.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            data = r.read().decode()
        return data if raw else (json.loads(data) if data else None)

    def server_log(self)->str: return (self.root / "server.log").read_text()[-5000:]

    def close(self):
        self.proc.terminate()
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        self.log.close()

class Kernel:
    "A kernel's websocket channels as JupyterLab opens them; `run` executes code and returns every reply and output."
    def __init__(self, lab:Lab, kernel_id:str, session_id:str):
        self.session = session_id
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{lab.port}/api/kernels/{kernel_id}/channels?session_id={session_id}",
                                              header=[f"Authorization: token {lab.token}"], timeout=600)

    def run(self, code:str, timeout:float=600)->dict:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({"channel": "shell", "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                                  "session": self.session, "version": "5.3", "date": ""}, "parent_header": {}, "metadata": {},
                                  "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                                              "allow_stdin": False, "stop_on_error": True}, "buffers": []}))
        res, t0 = dict(reply=None, outputs=[], comms=[], idle=False), time.time()
        while res["reply"] is None or not res["idle"]:
            if time.time() - t0 > timeout: raise TimeoutError(f"cell did not finish in {timeout} s:\n{code}")
            m = json.loads(self.ws.recv())
            if m.get("parent_header", {}).get("msg_id") != msg_id: continue
            t, c = m["header"]["msg_type"], m["content"]
            if t == "execute_reply": res["reply"] = c
            elif t == "status": res["idle"] = res["idle"] or c["execution_state"] == "idle"
            elif t in ("stream", "display_data", "execute_result", "error", "update_display_data"): res["outputs"].append(dict(c, output_type=t))
            elif t in ("comm_open", "comm_msg"): res["comms"].append(dict(c, msg_type=t))
        return res

    def close(self): self.ws.close()

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(NOTEBOOK, root / "fuse.ipynb")   # the notebook a user opens (nbs/pipelines/, shipped as wrpo.pipelines)
    lab = Lab(root)
    yield lab
    lab.close()

def test_widgets_extension_is_served(lab):
    "The page JupyterLab serves loads the ipywidgets manager, so the browser can draw the widgets below."
    page = lab.api("GET", "/lab", raw=True)
    assert "@jupyter-widgets/jupyterlab-manager" in page, "ipywidgets' JupyterLab extension (jupyterlab_widgets) is not installed"

def test_pipeline_notebook_in_jupyterlab(lab):
    nb = lab.api("GET", "/api/contents/fuse.ipynb?content=1")["content"]   # open it
    sess = lab.api("POST", "/api/sessions", dict(path="fuse.ipynb", name="fuse.ipynb", type="notebook", kernel=dict(name="python3")))
    k = Kernel(lab, sess["kernel"]["id"], sess["id"])
    run_dir = lab.root / "run"
    overrides = SMOKE if os.environ.get("WRPO_LAB_SIZE") == "smoke" else []
    edit = f"config = 'ci'\nrun_dir = {str(run_dir)!r}\noverrides = {overrides!r}"   # what the user types into the parameters cell
    results, t0 = [], time.time()
    try:
        for cell in nb["cells"]:
            if cell["cell_type"] != "code": continue
            results.append(r := k.run(cell["source"]))
            detail = json.dumps(r["outputs"], default=str)[-3000:] + "\n" + lab.server_log()[-2000:]
            assert r["reply"]["status"] == "ok", f"cell failed:\n{cell['source']}\n{r['reply'].get('evalue')}\n{detail}"
            assert not [o for o in r["outputs"] if o["output_type"] == "error"], detail
            if "parameters" in cell["metadata"].get("tags", []): results.append(k.run(edit))
    finally:
        k.close(); lab.api("DELETE", f"/api/sessions/{sess['id']}")
    print(f"pipeline notebook in JupyterLab: {time.time() - t0:.0f} s")
    outputs = [o for r in results for o in r["outputs"]]
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert f"run '{'lab' if overrides else 'ci'}' in {run_dir}" in text, text[:2000]   # the edited parameters were used
    assert "pipeline finished" in text and (run_dir / "results.md").is_file()
    assert any("text/markdown" in o.get("data", {}) for o in outputs)   # the results table, rendered
    for noise in ("IProgress not found", "TqdmWarning", "Traceback"): assert noise not in text, noise
    # progress as widgets: tqdm's bars are displayed as widget views whose models (comm_open) are progress bars
    # with a label naming the stage, updated to completion
    views = [o for o in outputs if WIDGET in o.get("data", {})]
    assert views, "no progress widget was displayed"
    labels = [json.dumps(c["data"]) for r in results for c in r["comms"]]
    assert any("samples:src_llama_add" in s for s in labels) and any("score:sources" in s for s in labels), labels[:5]
    states = {}   # widget id -> latest state
    for r in results:
        for c in r["comms"]: states.setdefault(c["comm_id"], {}).update(c["data"].get("state", {}))
    bars = [s for s in states.values() if s.get("_model_name") == "FloatProgressModel"]
    assert bars and sum(s.get("value") == s.get("max") > 0 for s in bars) >= 3, bars[:3]   # at least the three sources' bars completed
