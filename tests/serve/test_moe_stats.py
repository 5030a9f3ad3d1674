"""test_moe_stats.py — routing statistics of a MoE model served by `tern
serve`: /metrics (tern:moe_expert_tokens{layer,expert} over the engine's
window, tern:moe_expert_tokens_total, tern:moe_load_imbalance{layer}) and
the --moe-stats file written at exit (JSON and CSV).

The model is tiny-qwen3moe from `tern synth` (random weights, 8 experts,
top-3, every layer MoE). Requests are token-id completions at temperature 0
with prompts shorter than a KV block (so nothing comes from the prefix
cache). Every computed token is routed to exactly top-k experts in each MoE
layer; a request computes its prompt and then every generated token but the
last, and the last layer computes only the rows whose logits are wanted
(one per generated token). So per layer the experts' counts must sum to
exactly top_k * (sum of prompts + sum of (completion - 1)), and the last
layer's to top_k * sum of completions.
"""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

TERN = os.environ.get("TERN_BIN", "build/tern")
VOCAB = "../shared/data/models/stories260K/stories260K.v3.derived.gguf"
TOP_K = 3
N_LAYER = 2
N_EXPERT = 8


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model():
    d = tempfile.mkdtemp(prefix="tern-moe-")
    path = os.path.join(d, "tiny-qwen3moe.gguf")
    subprocess.run([TERN, "synth", "--preset", "tiny-qwen3moe", "--dtype", "f32", "--vocab", VOCAB, "-o", path,
                    "-t", "1"], check=True, stdout=subprocess.DEVNULL)
    yield path
    os.remove(path)
    os.rmdir(d)


class Server:
    def __init__(self, model, *args):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.err = tempfile.NamedTemporaryFile(prefix="tern-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([TERN, "serve", "-m", model, "--name", "m", "--port", str(self.port), "-t", "1",
                                      *args],
                                     stdout=subprocess.DEVNULL, stderr=self.err)
        deadline = time.time() + 60
        while True:
            assert self.proc.poll() is None, f"tern serve exited: {self.log()}"
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.time() < deadline, "tern serve did not come up"
            time.sleep(0.1)

    def log(self):
        with open(self.err.name, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self.err.name)
        return self.proc.returncode


def complete(srv, prompt, max_tokens):
    r = requests.post(srv.url + "/v1/completions", timeout=60,
                      json={"model": "m", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    assert r.status_code == 200, r.text
    u = r.json()["usage"]
    return u["prompt_tokens"], u["completion_tokens"]


def metric(text, name):
    """{(layer, expert) or (layer,): value} of tern:NAME lines."""
    out = {}
    for m in re.finditer(r"^tern:%s\{[^}]*?layer=\"(\d+)\"(?:,expert=\"(\d+)\")?\} (\S+)$" % name, text, re.M):
        key = (int(m.group(1)),) + ((int(m.group(2)),) if m.group(2) else ())
        out[key] = float(m.group(3))
    return out


def run_requests(srv):
    """Three token-id prompts of 5, 7 and 9 tokens; returns the expected
    per-layer sums (all layers but the last, the last)."""
    computed = rows = 0
    for i, n in enumerate((5, 7, 9)):
        prompt = [(37 * (i * 16 + j) + 11) % 500 + 3 for j in range(n)]
        p, c = complete(srv, prompt, 4 + i)
        assert p == n and c == 4 + i
        computed += p + c - 1
        rows += c
    return TOP_K * computed, TOP_K * rows


def check_layers(per_layer, want_inner, want_last):
    assert sorted(per_layer) == list(range(N_LAYER))
    for il, counts in per_layer.items():
        assert len(counts) == N_EXPERT
        assert all(c >= 0 for c in counts)
        assert sum(1 for c in counts if c > 0) >= 2  # random routers use more than one expert
        assert sum(counts) == (want_last if il == N_LAYER - 1 else want_inner), (il, counts)


def test_metrics_and_json_file(model):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "moe.json")
        srv = Server(model, "--moe-stats", path)
        try:
            text = requests.get(srv.url + "/metrics", timeout=10).text
            assert "tern:moe_expert_tokens{" not in text  # nothing routed yet: no MoE layer to show
            want_inner, want_last = run_requests(srv)
            text = requests.get(srv.url + "/metrics", timeout=10).text
        finally:
            rc = srv.stop()
        assert rc == 0
        window = metric(text, "moe_expert_tokens")
        total = metric(text, "moe_expert_tokens_total")
        assert window == total  # fewer steps than the window (64)
        per_layer = {}
        for (il, e), v in sorted(total.items()):
            per_layer.setdefault(il, []).append(int(v))
        check_layers(per_layer, want_inner, want_last)
        imb = metric(text, "moe_load_imbalance")
        assert sorted(imb) == [(il,) for il in range(N_LAYER)]
        for (il,), v in imb.items():
            c = per_layer[il]
            assert v == pytest.approx(max(c) * N_EXPERT / sum(c), rel=1e-5)
            assert 1.0 <= v <= N_EXPERT
        steps = re.search(r"^tern:moe_window_steps\{[^}]*\} (\S+)$", text, re.M)
        assert steps and 3 <= float(steps.group(1)) <= 64

        with open(path) as f:  # written when the engine stopped
            js = json.load(f)
        assert js["n_layer"] == N_LAYER and js["n_expert"] == N_EXPERT and js["window_calls"] == 64
        check_layers({l["layer"]: l["total"] for l in js["layers"]}, want_inner, want_last)
        assert {l["layer"]: l["window"] for l in js["layers"]} == per_layer
        assert not os.path.exists(path + ".tmp")


def test_csv_file(model):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "moe.csv")
        srv = Server(model, "--moe-stats", path)
        try:
            want_inner, want_last = run_requests(srv)
        finally:
            assert srv.stop() == 0
        with open(path) as f:
            lines = f.read().splitlines()
        assert lines[0] == "layer,expert,window_tokens,total_tokens"
        per_layer = {}
        for line in lines[1:]:
            il, e, w, t = map(int, line.split(","))
            assert w == t and e == len(per_layer.get(il, []))
            per_layer.setdefault(il, []).append(t)
        check_layers(per_layer, want_inner, want_last)


def test_dense_model_has_no_moe_metrics():
    srv = Server("../shared/data/models/stories260K/stories260K.v3.derived.gguf")
    try:
        complete(srv, [5, 6, 7], 2)
        text = requests.get(srv.url + "/metrics", timeout=10).text
    finally:
        assert srv.stop() == 0
    assert "tern:generation_tokens_total" in text
    assert "moe_" not in text
