"""The remote reward server and its client, in OpenRLHF's protocol: `rw_eval.py --serve` scores as pipeline() does and
survives bad requests; the client sends what OpenRLHF's servers read, retries what another attempt may mend (no
connection, a timeout, HTTP 5xx) and stops with one line naming the URL, the attempts and the cause otherwise."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from conftest import CPU_ENV, ROOT, free_port, main_exits, read_metrics, rlhf_args, run_step3
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from utils.data.formatting import format_text
from utils.errors import RunError, UserError
from utils.rewards.remote import RemoteReward, RewardServerError

PAIRS = [("What is 3 plus 4?", "7."), ("What color is snow?", "Snow is white, and it is cold to the touch."),
         ("Can you help me?", "No."), ("How many legs does a spider have?", "Eight."), ("Hi?", "Hello there, friend.")]


@pytest.fixture(scope="module")
def reward_model(opt_dir, tmp_path_factory):
    """A reward model on the tiny OPT base with a head wide enough that texts score far apart."""
    out = tmp_path_factory.mktemp("remote_rm")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(opt_dir, num_labels=1)
    torch.nn.init.normal_(model.score.weight, std=1.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(opt_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def server(reward_model, tmp_path_factory):
    """The one real server of this file, in its own process, as users start it; texts in batches of 2, so that
    padding is in play."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "rw_eval.py"), "--serve", "--port", port,
                                 "--model_name_or_path", str(reward_model), "--batch_size", "2"], stdout=out,
                                stderr=subprocess.STDOUT, cwd="/", env=os.environ | CPU_ENV)
    deadline = time.time() + 120
    while f"on http://127.0.0.1:{port}" not in log.read_text():
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", proc, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _post(url, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_server_scores_as_pipeline_does_on_any_path(server, reward_model):
    """planted: the server scoring the "prompts" instead of the "query" texts fails this."""
    url, _, log = server
    assert f"serving {reward_model} on {url}" in log.read_text()
    texts = [format_text(p, a, "dschat") for p, a in PAIRS]
    scorer = pipeline("text-classification", model=str(reward_model), function_to_apply="none", device="cpu")
    expected = [out["score"] for out in scorer(texts, batch_size=1)]
    assert max(expected) - min(expected) > 0.1  # texts that a wrong order or position would tell apart

    prompts = [format_text(p, "", "dschat") for p, _ in PAIRS]
    assert RemoteReward(url + "/get_reward")(texts, prompts) == pytest.approx(expected, abs=1e-5)
    chunked = RemoteReward(url, batch_size=2)(texts, prompts, labels=["7", None, 1, "", ""])
    assert chunked == pytest.approx(expected, abs=1e-5)


def test_server_answers_bad_requests_with_400_and_keeps_serving(server):
    url, proc, _ = server
    for body, message in [(b"{not json", "the body is not JSON"),
                          (b'{"prompts": ["a"]}', '"query" is a list of texts'),
                          (b'{"query": ["fine", 3]}', "query 1 is int, not a string")]:
        status, reply = _post(url, body)
        assert status == 400 and message in reply["error"], reply
    status, reply = _post(url + "/anything", json.dumps({"query": ["Human: Hi? Assistant: Hello."]}).encode())
    assert status == 200 and len(reply["rewards"]) == 1 and proc.poll() is None


def test_server_stops_cleanly_on_sigterm(server):
    _, proc, log = server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0 and "Traceback" not in log.read_text()


def test_serve_refuses_flags_of_the_other_modes(tmp_path, monkeypatch, capsys):
    code, _, err = main_exits(ROOT / "rw_eval.py", ["--model_name_or_path", tmp_path, "--serve", "--data_path", "x",
                                                    "--check_pipeline"], monkeypatch, capsys)
    assert code == 2 and "--serve scores the texts its clients send: drop --data_path, --check_pipeline" in err


@contextlib.contextmanager
def fake_server(*replies):
    """An in-process server that answers the n-th request with replies[n] (the last one repeated): a (status, body,
    seconds to wait first), the body bytes, JSON, or a function of the request's JSON. Yields its URL and the
    requests it saw."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            status, body, wait = replies[min(len(seen), len(replies)) - 1]
            time.sleep(wait)
            body = body(seen[-1]) if callable(body) else body
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(OSError):  # a client that timed out is gone
                self.wfile.write(data)

        def log_message(self, *args):
            pass

    fake = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=fake.serve_forever, args=(0.01,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{fake.server_address[1]}/score", seen
    finally:
        fake.shutdown()
        fake.server_close()


def _fails(client, queries=("a", "b")):
    with pytest.raises(RewardServerError) as caught:
        client(list(queries), list(queries))
    assert isinstance(caught.value, RunError) and "\n" not in str(caught.value)
    return str(caught.value)


def test_client_sends_openrlhf_requests_in_chunks_and_keeps_the_order():
    """planted: the last chunk dropped (range(0, len - size, size)) fails this."""
    with fake_server((200, lambda request: {"rewards": [len(q) for q in request["query"]], "scores": [0.0]}, 0)) \
            as (url, seen):
        rewards = RemoteReward(url, batch_size=2)(["a", "bb", "ccc", "dddd", "eeeee"], ["p"] * 5, [1, 2, 3, 4, 5])
    assert rewards == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert seen == [{"query": ["a", "bb"], "prompts": ["p", "p"], "labels": [1, 2]},
                    {"query": ["ccc", "dddd"], "prompts": ["p", "p"], "labels": [3, 4]},
                    {"query": ["eeeee"], "prompts": ["p"], "labels": [5]}]
    with fake_server((200, {"rewards": [0.5]}, 0)) as (url, seen):
        assert RemoteReward(url)(["a"], ["p"]) == [0.5] and seen[0]["labels"] == [""]  # OpenRLHF's missing label


def test_client_retries_5xx_then_stops_with_one_clear_line():
    """planted: `range(self.retries)` for the attempts (one too few) fails this."""
    with fake_server((503, {"error": "warming up"}, 0), (200, {"rewards": [1, -2.5]}, 0)) as (url, seen):
        assert RemoteReward(url, retries=1, backoff=0.01)(["a", "b"], ["a", "b"]) == [1.0, -2.5] and len(seen) == 2
    with fake_server((500, b"Internal\nServer Error", 0)) as (url, seen):
        message = _fails(RemoteReward(url, timeout=5, retries=2, backoff=0.01))
    assert len(seen) == 3
    assert message == (f"reward server {url}: no rewards after 3 attempts (5 s timeout each); last: HTTP 500: "
                       "Internal Server Error")


def test_client_retries_a_timeout_and_a_refused_connection():
    with fake_server((200, {"rewards": [1.0, 2.0]}, 0.6)) as (url, seen):
        message = _fails(RemoteReward(url, timeout=0.1, retries=1, backoff=0.01))
    assert len(seen) == 2 and message.endswith("after 2 attempts (0.1 s timeout each); last: no answer within 0.1 s")
    nobody = f"http://127.0.0.1:{free_port()}/"  # bound here, never listening
    assert "after 2 attempts" in (message := _fails(RemoteReward(nobody, retries=1, backoff=0.01))) \
        and "cannot connect: [Errno 111] Connection refused" in message


def test_client_does_not_retry_a_4xx():
    """planted: retrying every status from 400 up fails this."""
    with fake_server((400, {"error": "query 1 is int, not a string"}, 0)) as (url, seen):
        message = _fails(RemoteReward(url, retries=3, backoff=0.01))
    assert len(seen) == 1
    assert message == (f'reward server {url} refused the request (HTTP 400, not retried): {{"error": "query 1 is int, '
                       'not a string"}')


@pytest.mark.parametrize("body, cause", [
    (b"<html>bad gateway</html>", "not JSON: <html>bad gateway</html>"),
    ({"scores": [1.0, 2.0]}, 'no "rewards" list in {"scores": [1.0, 2.0]}'),
    ([1.0, 2.0], 'no "rewards" list in [1.0, 2.0]'),
    ({"rewards": [1.0]}, "1 rewards for 2 queries"),  # planted: no count check fails this
    ({"rewards": [1.0, "2"]}, 'reward 1 is "2", not a finite number'),
    ({"rewards": [True, 2.0]}, "reward 0 is true, not a finite number"),
    (b'{"rewards": [1.0, NaN]}', "reward 1 is NaN, not a finite number"),  # planted: no isfinite check fails this
], ids=["not-json", "no-rewards", "bare-list", "wrong-count", "string", "bool", "nan"])
def test_client_refuses_a_malformed_reply_without_retrying(body, cause):
    with fake_server((200, body, 0)) as (url, seen):
        message = _fails(RemoteReward(url, retries=2, backoff=0.01))
    assert len(seen) == 1 and message == f"reward server {url} answered with a malformed reply (not retried): {cause}"


def test_client_refuses_a_url_without_a_scheme():
    with pytest.raises(UserError, match="--reward_url 'localhost:5000': give an http:// or https:// URL"):
        RemoteReward("localhost:5000")


def test_step3_stops_with_a_checkpoint_when_the_server_dies_and_resumes_when_it_is_back(actor_dir, tmp_path):
    """The server answers the step-0 evaluation (sampled and greedy) and the first rollout, then fails: the run saves
    the checkpoint of step 1 at the second batch's start and exits 3 naming the URL; the resumed run, against a
    server that answers, samples that batch again and ends with every step once."""
    letters = (200, lambda request: {"rewards": [float(q.count("e")) for q in request["query"]]}, 0)
    args = [str(a) for a in rlhf_args(actor_dir, "unused", tmp_path / "run", "--data_path", "synthetic:40",
                                      "--reward_retries", 0)]
    at = args.index("--critic_model_name_or_path")
    args = args[:at] + args[at + 2:]  # the server is the only reward
    with fake_server(letters, letters, letters, (500, b"out of memory", 0)) as (url, seen):
        died = run_step3(args + ["--reward_url", url], check=False)
    assert died.returncode == 3 and len(seen) == 4, died.stderr[-2000:]
    checkpoint = tmp_path / "run" / "checkpoints" / "step1"
    assert f"error: reward server {url}" in died.stderr and f"checkpoint saved in {checkpoint}" in died.stderr
    with fake_server(letters) as (url, seen):
        run_step3(args + ["--reward_url", url, "--resume"])
    assert [m["step"] for m in read_metrics(tmp_path / "run") if m["split"] == "train"] == list(range(1, 11))
