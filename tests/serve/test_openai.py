"""test_openai.py — `tern serve` as the official openai client and raw HTTP
clients see it, on live servers bound to 127.0.0.1 (free ports) with
stories260K.

What is asserted: chat and completions, streamed and not, agree with each
other and with `tern run` (temperature 0); stop strings end the text before
the stop and never reach the client, streamed or not; max_tokens, n, seeds,
logprobs, echo, token-id prompts; usage and finish_reason are exact; every
error has OpenAI's shape and status (400, 401, 404, 413, 429 + Retry-After);
a client that disconnects mid-stream is cancelled (visible in /metrics);
garbage, truncated and slow requests do not disturb the server; concurrent
streams give the same greedy text as a lone request; SIGTERM exits cleanly
and the server's stderr carries no sanitizer report.
"""
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import openai
import pytest
import requests

TERN = os.environ.get("TERN_BIN", "build/tern")
MODEL = "../shared/data/models/stories260K/stories260K.v3.derived.gguf"
NAME = "stories260K.v3.derived"
PROMPT = "Once upon a time"
MAX_BODY = 65536


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.err = tempfile.NamedTemporaryFile(prefix="tern-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([TERN, "serve", "-m", MODEL, "--port", str(self.port), "-t", "1", *args],
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

    def client(self, key="none"):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60)

    def stop(self):
        """SIGTERM; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return "hung"
        return self.proc.returncode

    def assert_clean(self):
        rc = self.stop()
        log = self.log()
        os.unlink(self.err.name)
        assert rc == 0, f"exit status {rc}: {log}"
        assert not re.search(r"AddressSanitizer|LeakSanitizer|runtime error:", log), log


@pytest.fixture(scope="module")
def srv():
    s = Server("--max-body", str(MAX_BODY))
    yield s
    s.assert_clean()


@pytest.fixture(scope="module")
def client(srv):
    return srv.client()


def tern_run_greedy(n):
    out = subprocess.run([TERN, "run", "-m", MODEL, "-p", PROMPT, "-n", str(n), "--temp", "0", "-t", "1"],
                         capture_output=True, check=True)
    return out.stdout.decode()


def greedy(client, n=48, **kw):
    return client.completions.create(model=NAME, prompt=PROMPT, max_tokens=n, temperature=0, **kw)


def metric(srv, name):
    text = requests.get(srv.url + "/metrics", timeout=10).text
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, f"{name} not in /metrics"
    return total


def count_tokens(srv, **body):
    r = requests.post(srv.url + "/tokenize", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["count"]


# --- basics -------------------------------------------------------------------


def test_models_and_health(srv, client):
    assert [m.id for m in client.models.list().data] == [NAME]
    assert requests.get(srv.url + "/health", timeout=5).json() == {"status": "ok"}


def test_completion_equals_tern_run(srv, client):
    r = greedy(client, 40)
    c = r.choices[0]
    assert c.finish_reason == "length"
    assert r.usage.completion_tokens == 40
    assert r.usage.prompt_tokens == count_tokens(srv, prompt=PROMPT)
    assert r.usage.total_tokens == r.usage.prompt_tokens + 40
    # tern run echoes the detokenized prompt (" Once upon a time") then the text
    assert tern_run_greedy(40) == " " + PROMPT + c.text


def test_completion_stream_matches(client):
    full = greedy(client, 30).choices[0].text
    chunks = list(client.completions.create(model=NAME, prompt=PROMPT, max_tokens=30, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == full
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 30


def test_chat(srv, client):
    msgs = [{"role": "system", "content": "You tell stories."},
            {"role": "user", "content": [{"type": "text", "text": "Tell me"}, {"type": "text", "text": " a story."}]}]
    r = client.chat.completions.create(model=NAME, messages=msgs, max_tokens=24, temperature=0)
    m = r.choices[0]
    assert m.message.role == "assistant" and m.message.content
    assert m.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == count_tokens(srv, messages=msgs)
    if m.finish_reason == "length":
        assert r.usage.completion_tokens == 24
    s = client.chat.completions.create(model=NAME, messages=msgs, max_tokens=24, temperature=0, stream=True)
    chunks = list(s)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == m.message.content
    assert chunks[-1].choices[0].finish_reason == m.finish_reason


def test_max_tokens_variants(client):
    r = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hi"}],
                                       max_completion_tokens=3, temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"
    r = greedy(client, 1)
    assert r.usage.completion_tokens == 1


# --- stop strings ---------------------------------------------------------------


def test_stop_strings(client):
    full = greedy(client, 64).choices[0].text
    words = full.split()
    stop = words[len(words) // 2]            # a word from the middle
    want = full[:full.index(stop)]
    r = greedy(client, 64, stop=[stop, "zzzz-never"])
    assert r.choices[0].text == want and r.choices[0].finish_reason == "stop"
    assert stop not in r.choices[0].text
    assert 0 < r.usage.completion_tokens < 64
    chunks = list(client.completions.create(model=NAME, prompt=PROMPT, max_tokens=64, temperature=0, stop=stop,
                                            stream=True))
    texts = [c.choices[0].text for c in chunks]
    assert "".join(texts) == want
    assert all(stop not in t for t in texts)
    assert chunks[-1].choices[0].finish_reason == "stop"
    # a stop string spanning several tokens
    span = full[10:22]
    r = greedy(client, 64, stop=span)
    assert r.choices[0].text == full[:full.index(span)]


# --- n, seeds, logprobs, echo, prompts -------------------------------------------


def test_n_and_seed(client):
    kw = dict(model=NAME, prompt=PROMPT, max_tokens=20, temperature=1.0, seed=1234)
    a = client.completions.create(n=3, **kw)
    assert sorted(c.index for c in a.choices) == [0, 1, 2]
    b = client.completions.create(n=3, **kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert a.usage.completion_tokens <= 60 and a.usage.prompt_tokens == b.usage.prompt_tokens
    c = client.completions.create(**{**kw, "seed": 99})
    d = client.completions.create(**{**kw, "seed": 99})
    assert c.choices[0].text == d.choices[0].text


def test_logprobs(client):
    r = greedy(client, 12, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r.usage.completion_tokens
    assert "".join(lp.tokens) == r.choices[0].text
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen <= 0 and 1 <= len(top) <= 3
        assert abs(max(top.values()) - chosen) < 1e-4  # greedy picks the most likely token
    c = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=5,
                                       temperature=0, logprobs=True, top_logprobs=2)
    content = c.choices[0].logprobs.content
    assert len(content) >= 1 and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)


def test_echo_and_token_prompts(srv, client):
    r = greedy(client, 8, echo=True)
    assert r.choices[0].text.startswith(PROMPT)
    ids = requests.post(srv.url + "/tokenize", json={"prompt": PROMPT}, timeout=10).json()["tokens"]
    t = client.completions.create(model=NAME, prompt=ids, max_tokens=8, temperature=0)
    assert t.choices[0].text == greedy(client, 8).choices[0].text
    two = client.completions.create(model=NAME, prompt=[PROMPT, "The dog"], max_tokens=4, temperature=0)
    assert sorted(c.index for c in two.choices) == [0, 1]
    back = requests.post(srv.url + "/detokenize", json={"tokens": ids}, timeout=10).json()["prompt"]
    assert back.strip() == PROMPT


def test_echo_logprobs(srv, client):
    """echo + logprobs: the prompt's tokens come first (OpenAI's legacy shape, null for the first), and each
    prompt token's logprob equals what a completion of the preceding prefix reports for that token (forced with
    logit_bias +100; logprobs are those of the unbiased distribution)."""
    ids = requests.post(srv.url + "/tokenize", json={"prompt": PROMPT}, timeout=10).json()["tokens"]
    r = greedy(client, 6, echo=True, logprobs=2)
    c = r.choices[0]
    lp = c.logprobs
    n = len(ids)
    assert c.text.startswith(PROMPT)
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n + 6
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x is not None and x <= 0 for x in lp.token_logprobs[1:])
    assert all(1 <= len(t) <= 2 for t in lp.top_logprobs[1:])
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    assert lp.text_offset[n] == len(PROMPT.encode())  # completion offsets count from the start of the echo
    assert "".join(lp.tokens[n:]) == c.text[len(PROMPT):]
    plain = greedy(client, 6, logprobs=2).choices[0].logprobs
    assert lp.tokens[n:] == plain.tokens
    assert all(abs(a - b) < 1e-4 for a, b in zip(lp.token_logprobs[n:], plain.token_logprobs))
    for i in range(1, n):
        f = client.completions.create(model=NAME, prompt=ids[:i], max_tokens=1, temperature=0, logprobs=1,
                                      logit_bias={str(ids[i]): 100})
        fl = f.choices[0].logprobs
        assert fl.tokens[0] == lp.tokens[i]
        assert abs(fl.token_logprobs[0] - lp.token_logprobs[i]) < 1e-4, (i, fl.token_logprobs[0], lp.token_logprobs[i])
        assert abs(max(fl.top_logprobs[0].values()) - max(lp.top_logprobs[i].values())) < 1e-4
    # max_tokens 0: scoring a text; a repeat (prefix cache warm) gives the same numbers
    for _ in range(2):
        z = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=0, echo=True, logprobs=0)
        assert z.choices[0].text == PROMPT and z.usage.completion_tokens == 0
        assert z.choices[0].logprobs.tokens == lp.tokens[:n]
        assert all(a == b or abs(a - b) < 1e-4 for a, b in zip(z.choices[0].logprobs.token_logprobs[1:],
                                                                lp.token_logprobs[1:n]))
    # streamed: the echo chunk carries the prompt's logprobs, then the tokens follow
    chunks = list(client.completions.create(model=NAME, prompt=PROMPT, max_tokens=6, temperature=0, echo=True,
                                            logprobs=2, stream=True))
    toks, lps, offs, text = [], [], [], ""
    for ch in chunks:
        text += ch.choices[0].text
        if ch.choices[0].logprobs:
            toks += ch.choices[0].logprobs.tokens
            lps += ch.choices[0].logprobs.token_logprobs
            offs += ch.choices[0].logprobs.text_offset
    assert chunks[0].choices[0].text == PROMPT and len(chunks[0].choices[0].logprobs.tokens) == n
    assert text == c.text and toks == lp.tokens and offs == lp.text_offset
    assert lps[0] is None and all(abs(a - b) < 1e-4 for a, b in zip(lps[1:], lp.token_logprobs[1:]))


CHAT_DATA = os.path.join(os.path.dirname(os.path.abspath(MODEL)), "..", "..", "chat")
TOOL_TEMPLATES = ["Qwen-Qwen2.5-7B-Instruct", "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use",
                  "NousResearch-Hermes-2-Pro-Mistral-7B-tool_use", "mistralai-Mistral-Nemo-Instruct-2407"]


@pytest.mark.parametrize("name", TOOL_TEMPLATES)
def test_tool_templates(name):
    """tool messages, assistant tool_calls and a `tools` field reach a real model's chat template: the
    rendering equals Python jinja2's golden (its BOS/EOS text replaced by this vocabulary's), and a chat request
    with them tokenizes exactly that."""
    with open(os.path.join(CHAT_DATA, "contexts", "tool_use.json")) as f:
        ctx = json.load(f)
    with open(os.path.join(CHAT_DATA, "goldens", f"{name}-tool_use.txt")) as f:
        want = f.read()
    want = want.replace(ctx["bos_token"], "<s>").replace(ctx["eos_token"], "</s>")
    # these prompts are ~2000 tokens in stories260K's small vocabulary: a context past the trained 512
    s = Server("--chat-template-file", os.path.join(CHAT_DATA, "templates", name + ".jinja"), "-c", "4096")
    try:
        body = {"messages": ctx["messages"], "tools": ctx["tools"]}
        r = requests.post(s.url + "/apply-template", json=body, timeout=30)
        assert r.status_code == 200, r.text
        got = r.json()["prompt"]
        assert got == want
        assert "ipython" in got and "brave_search" in got  # the tool definitions and calls are there
        no_tools = requests.post(s.url + "/apply-template", json={"messages": ctx["messages"]}, timeout=30)
        assert no_tools.status_code == 200 and no_tools.json()["prompt"] != got
        # max_tokens 0: the request is rendered and tokenized, nothing is computed (a 2000-token prefill
        # would cost seconds here); generation after tool turns is exercised in test_message_shapes
        c = s.client().chat.completions.create(model=NAME, messages=ctx["messages"], tools=ctx["tools"],
                                               max_tokens=0, temperature=0)
        assert c.choices[0].finish_reason == "length" and c.usage.completion_tokens == 0
        assert c.usage.prompt_tokens == count_tokens(s, messages=ctx["messages"], tools=ctx["tools"])
    finally:
        s.assert_clean()


def test_message_shapes(srv, client):
    ok = [{"role": "user", "content": [{"type": "text", "text": "Tell me"}, {"type": "text", "text": " a story."}]}]
    joined = [{"role": "user", "content": "Tell me a story."}]
    assert count_tokens(srv, messages=ok) == count_tokens(srv, messages=joined)
    img = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=NAME, messages=img, max_tokens=2)
    err = ei.value.response.json()["error"]
    assert err["param"] == "messages" and "image_url" in err["message"] and "content[1]" in err["message"]
    bad = [({"tools": {"type": "function"}}, "tools"),
           ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools"),
           ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{"function": {"arguments": 3,
                                                                                             "name": "f"}}]}]},
            "messages"),
           ({"messages": [{"role": "robot", "content": "hi"}]}, "messages")]
    for extra, param in bad:
        body = {"model": NAME, "messages": joined, "max_tokens": 2, **extra}
        r = requests.post(srv.url + "/v1/chat/completions", json=body, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (extra, r.text)
    # chatml (the model has no template) renders tool turns too
    tool_turns = [{"role": "user", "content": "weather?"},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "rain"}]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    r = client.chat.completions.create(model=NAME, messages=tool_turns, tools=tools, max_tokens=2, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == count_tokens(srv, messages=tool_turns, tools=tools)
    text = requests.post(srv.url + "/apply-template", json={"messages": tool_turns}, timeout=10).json()["prompt"]
    assert "get_weather" in text and "Oslo" in text and "rain" in text


def test_logit_bias(srv, client):
    first = greedy(client, 1).choices[0].text
    p = requests.post(srv.url + "/tokenize", json={"prompt": PROMPT}, timeout=10).json()["tokens"]
    q = requests.post(srv.url + "/tokenize", json={"prompt": PROMPT + first}, timeout=10).json()["tokens"]
    assert q[:len(p)] == p and len(q) == len(p) + 1, (p, q)
    tok = q[-1]
    banned = greedy(client, 4, logit_bias={str(tok): -100})
    assert not banned.choices[0].text.startswith(first)
    # +100 on the banned token brings it back; an empty object changes nothing
    assert greedy(client, 1, logit_bias={str(tok): 100}).choices[0].text == first
    assert greedy(client, 1, logit_bias={}).choices[0].text == first
    c = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=3,
                                       temperature=0, logit_bias={str(tok): 100})
    assert c.choices[0].message.content and c.usage.completion_tokens >= 1
    for bad in ({"abc": 1}, {"-1": 1}, {"1.5": 1}, {"99999999": 1}, {str(tok): 101}, {str(tok): "x"}):
        with pytest.raises(openai.BadRequestError) as ex:
            greedy(client, 1, logit_bias=bad)
        assert ex.value.status_code == 400
        assert ex.value.body["param"] == "logit_bias", bad


# --- errors -----------------------------------------------------------------------


def err_of(r, status):
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"} and e["message"]
    return e


def test_bad_json_and_params(srv, client):
    u = srv.url + "/v1/completions"
    err_of(requests.post(u, data=b'{"prompt": "x",', timeout=10), 400)
    err_of(requests.post(u, data=b'[1,2]', timeout=10), 400)
    e = err_of(requests.post(u, json={"prompt": PROMPT, "temperature": "hot"}, timeout=10), 400)
    assert e["param"] == "temperature"
    e = err_of(requests.post(u, json={"prompt": PROMPT, "max_tokens": -1}, timeout=10), 400)
    assert e["param"] == "max_tokens"
    e = err_of(requests.post(u, json={"prompt": [1, 2, 10 ** 9]}, timeout=10), 400)
    e = err_of(requests.post(srv.url + "/v1/chat/completions", json={"messages": "hi"}, timeout=10), 400)
    assert e["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as ex:
        client.completions.create(model=NAME, prompt=PROMPT, stop=5)
    assert ex.value.status_code == 400
    with pytest.raises(openai.BadRequestError) as ex:
        client.completions.create(model=NAME, prompt=PROMPT, n=0)
    # unknown fields are ignored
    r = requests.post(u, json={"prompt": PROMPT, "max_tokens": 2, "frobnicate": {"x": 1}}, timeout=10)
    assert r.status_code == 200


def test_prompt_too_long(client):
    with pytest.raises(openai.BadRequestError) as ex:
        client.completions.create(model=NAME, prompt="the cat sat on the mat. " * 200, max_tokens=4)
    assert ex.value.body["code"] == "context_length_exceeded"


def test_not_found(srv, client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt=PROMPT, max_tokens=2)
    err_of(requests.get(srv.url + "/v1/nothing", timeout=10), 404)


def test_body_too_large(srv):
    body = json.dumps({"prompt": "a" * (MAX_BODY + 100), "max_tokens": 1})
    e = err_of(requests.post(srv.url + "/v1/completions", data=body, timeout=10), 413)
    assert e["type"] == "invalid_request_error"
    r = requests.post(srv.url + "/v1/completions", data="x" * (MAX_BODY * 4), timeout=10)
    assert r.status_code == 413
    assert requests.get(srv.url + "/health", timeout=5).status_code == 200


def test_api_key():
    s = Server("--api-key", "sekrit")
    try:
        with pytest.raises(openai.AuthenticationError):
            s.client(key="wrong").completions.create(model=NAME, prompt=PROMPT, max_tokens=2)
        err_of(requests.post(s.url + "/v1/completions", json={"prompt": PROMPT}, timeout=10), 401)
        r = s.client(key="sekrit").completions.create(model=NAME, prompt=PROMPT, max_tokens=2)
        assert r.usage.completion_tokens == 2
        assert requests.get(s.url + "/health", timeout=5).status_code == 200
    finally:
        s.assert_clean()


def test_queue_full():
    s = Server("--max-queue", "1", "--parallel", "1")
    try:
        body = {"prompt": PROMPT, "max_tokens": 400, "temperature": 0, "ignore_eos": True}

        def post(_):
            return requests.post(s.url + "/v1/completions", json=body, timeout=120)

        with concurrent.futures.ThreadPoolExecutor(12) as ex:
            rs = list(ex.map(post, range(12)))
        codes = [r.status_code for r in rs]
        assert 200 in codes and 429 in codes, codes
        r = next(r for r in rs if r.status_code == 429)
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["type"] == "rate_limit_error"
    finally:
        s.assert_clean()


# --- robustness -------------------------------------------------------------------


def test_disconnect_cancels(srv):
    aborted = metric(srv, "tern:request_success_total")
    body = {"prompt": PROMPT, "max_tokens": 480, "temperature": 0, "ignore_eos": True, "stream": True}
    with requests.post(srv.url + "/v1/completions", json=body, stream=True, timeout=30) as r:
        it = r.iter_lines()
        got = 0
        for line in it:
            if line.startswith(b"data: "):
                got += 1
            if got >= 3:
                break
    deadline = time.time() + 20
    while metric(srv, "tern:num_requests_http") > 0 or metric(srv, "tern:num_requests_running") > 0:
        assert time.time() < deadline, "the request was not cancelled"
        time.sleep(0.1)
    assert metric(srv, "tern:request_success_total") > aborted
    assert greedy(srv.client(), 4).usage.completion_tokens == 4


def raw(srv, data, close_early=False):
    """Sends bytes on a fresh connection; returns what comes back (the server
    may close first: that is fine)."""
    out = b""
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(data)
            if close_early:
                return out
            s.shutdown(socket.SHUT_WR)
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
    except OSError:
        pass
    return out


def test_garbage_and_truncated(srv):
    raw(srv, b"\x00\x01\x02 garbage \r\n\r\n")
    raw(srv, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\":", close_early=True)
    raw(srv, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n\xff\xfe\xfd\xfc\xfb")
    raw(srv, b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n\r\n")
    # a slow client holding a half-sent request does not block others
    slow = socket.create_connection(("127.0.0.1", srv.port))
    slow.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    try:
        assert greedy(srv.client(), 4).usage.completion_tokens == 4
    finally:
        slow.close()
    # invalid UTF-8 inside a JSON string
    r = requests.post(srv.url + "/v1/completions", data=b'{"prompt": "\xff\xfe", "max_tokens": 2}', timeout=10)
    assert r.status_code in (200, 400)
    assert requests.get(srv.url + "/health", timeout=5).status_code == 200


def test_concurrent_streams_match_alone(srv):
    prompts = [f"{PROMPT} there was a {w}" for w in ["cat", "dog", "girl", "boy", "bird", "tree", "king", "fish"]]
    c = srv.client()
    alone = {p: c.completions.create(model=NAME, prompt=p, max_tokens=24, temperature=0).choices[0].text
             for p in prompts}

    def stream(p):
        s = srv.client().completions.create(model=NAME, prompt=p, max_tokens=24, temperature=0, stream=True)
        return p, "".join(ch.choices[0].text for ch in s if ch.choices)

    with concurrent.futures.ThreadPoolExecutor(32) as ex:
        res = list(ex.map(stream, prompts * 4))
    for p, text in res:
        assert text == alone[p]


def test_metrics(srv):
    text = requests.get(srv.url + "/metrics", timeout=10).text
    for name in ["tern:num_requests_running", "tern:num_requests_waiting", "tern:kv_cache_usage_perc",
                 "tern:prefix_cache_queries_total", "tern:prefix_cache_hits_total",
                 "tern:time_to_first_token_seconds_bucket", "tern:time_per_output_token_seconds_count",
                 "tern:e2e_request_latency_seconds_sum", "tern:prompt_tokens_total", "tern:generation_tokens_total"]:
        assert name in text, name
    assert metric(srv, "tern:e2e_request_latency_seconds_count") > 0
    assert metric(srv, "tern:generation_tokens_total") > 0
    assert metric(srv, "tern:engine_forward_seconds_total") > 0
    assert metric(srv, "tern:engine_host_seconds_total") >= 0
    # this server computes on one thread (-t 1): no worker ever gets a job or sleeps
    assert metric(srv, "tern:engine_pool_jobs_total") == 0
    assert metric(srv, "tern:engine_pool_sleeps_total") == 0


def test_loop_thread_is_batch(srv):
    # the HTTP loop (the process's main thread) runs under SCHED_BATCH, so its wake-ups do not
    # preempt the compute threads (http.c, SCHEDULING); the engine thread and the pool's workers
    # were started before and stay SCHED_OTHER
    def policy(tid):
        with open(f"/proc/{srv.proc.pid}/task/{tid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[38])  # field 41: policy
    SCHED_OTHER, SCHED_BATCH = 0, 3
    tids = [int(t) for t in os.listdir(f"/proc/{srv.proc.pid}/task")]
    assert policy(srv.proc.pid) == SCHED_BATCH
    others = [policy(t) for t in tids if t != srv.proc.pid]
    assert others and all(p == SCHED_OTHER for p in others), others


# --- TGI and Triton ---------------------------------------------------------------


def test_tgi_and_triton(srv, client):
    want = greedy(client, 10).choices[0].text
    r = requests.post(srv.url + "/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 10,
                                                                                     "details": True}}, timeout=30)
    assert r.status_code == 200 and r.json()["generated_text"] == want
    assert r.json()["details"]["generated_tokens"] == 10
    r = requests.post(srv.url + "/generate_stream", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 10}},
                      stream=True, timeout=30)
    events = [json.loads(l[5:]) for l in r.iter_lines() if l.startswith(b"data:")]
    assert "".join(e["token"]["text"] for e in events) == want
    assert events[-1]["generated_text"] == want
    r = requests.post(srv.url + f"/v2/models/{NAME}/generate", json={"text_input": PROMPT, "max_tokens": 10,
                                                                      "parameters": {"temperature": 0}}, timeout=30)
    assert r.status_code == 200 and r.json()["text_output"] == want
    r = requests.post(srv.url + f"/v2/models/{NAME}/generate_stream",
                      json={"text_input": PROMPT, "max_tokens": 10, "parameters": {"temperature": 0}}, stream=True,
                      timeout=30)
    events = [json.loads(l[5:]) for l in r.iter_lines() if l.startswith(b"data:")]
    assert "".join(e["text_output"] for e in events) == want


# --- tern loadgen ------------------------------------------------------------------


def loadgen(srv, *args):
    out = subprocess.run([TERN, "loadgen", "--url", srv.url, "-o", "json", *args], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)


def test_loadgen(srv, tmp_path):
    # --prompt-len counts tokens of the server's vocabulary (token-id prompts from its /tokenize)
    r = loadgen(srv, "--concurrency", "3", "--num", "6", "--prompt-len", "21", "--output-len", "5",
                "--slo-ttft", "60000", "--slo-tpot", "60000")
    assert r["succeeded"] == 6 and r["mean_prompt_tokens"] == 21 and r["output_tokens"] == 30
    assert r["slo_attainment"] == 1.0 and abs(r["goodput"] - r["request_throughput"]) < 1e-9
    assert 0 < r["ttft_ms"]["p50"] <= r["ttft_ms"]["p99"] <= r["e2e_ms"]["p99"]
    # an SLO no request can meet: goodput 0
    r = loadgen(srv, "--rate", "50", "--num", "4", "--prompt-len", "8", "--output-len", "4", "--slo-ttft", "0.001")
    assert r["succeeded"] == 4 and r["goodput"] == 0 and r["slo_attainment"] == 0
    # a dataset: completions and chat lines, per-line max_tokens, used in turn
    ds = tmp_path / "ds.jsonl"
    lines = [{"prompt": PROMPT, "max_tokens": 3}, {"messages": [{"role": "user", "content": "hi"}]},
             {"prompt": [1, 400, 300, 200], "max_tokens": 2}]
    ds.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    r = loadgen(srv, "--concurrency", "2", "--num", "6", "--dataset", str(ds), "--output-len", "4")
    assert r["succeeded"] == 6 and r["output_tokens"] == 2 * (3 + 4 + 2)
    chat_prompt = count_tokens(srv, messages=lines[1]["messages"])
    want = (count_tokens(srv, prompt=PROMPT) + chat_prompt + 4) / 3
    assert abs(r["mean_prompt_tokens"] - want) < 1e-9
    ds.write_text('{"prompt": "ok"}\n{"messages": "not a list"}\n')
    out = subprocess.run([TERN, "loadgen", "--url", srv.url, "--concurrency", "1", "--num", "1", "--dataset", str(ds)],
                         capture_output=True, timeout=60)
    assert out.returncode == 2 and b":2:" in out.stderr and b"messages" in out.stderr


def test_kv_size():
    # --kv-size below one full context is refused at start, naming the sizes
    out = subprocess.run([TERN, "serve", "-m", MODEL, "--port", str(free_port()), "-t", "1", "--kv-size", "100"],
                         capture_output=True, timeout=60)
    assert out.returncode == 1 and b"n_kv_slots 100" in out.stderr and b"n_ctx 512" in out.stderr
    # a cache of exactly one context serves 4 x 200 tokens by preemption, with the same greedy text
    s = Server("--kv-size", "512", "-c", "512")
    try:
        c = s.client()
        one = lambda _: c.completions.create(model=NAME, prompt=PROMPT, max_tokens=200, temperature=0,
                                             extra_body={"ignore_eos": True}).choices[0].text
        alone = one(0)
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            outs = list(ex.map(one, range(4)))
        assert outs == [alone] * 4
        # four threads may not overlap on a fast machine; n=4 admits four sequences
        # at once, 4 x 200 generated tokens in 512 slots: preemption is certain
        four = c.completions.create(model=NAME, prompt=PROMPT, max_tokens=200, temperature=0, n=4,
                                    extra_body={"ignore_eos": True})
        assert [ch.text for ch in four.choices] == [alone] * 4
        assert metric(s, "tern:num_preemptions_total") > 0
    finally:
        s.assert_clean()
