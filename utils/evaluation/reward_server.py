"""A reward model served over HTTP in OpenRLHF's remote-reward protocol (`rw_eval.py --serve`), for
`utils/rewards/remote.py` and OpenRLHF's own client: POST {"query": [texts], ...} to any path, get {"rewards": [...]}.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from utils.errors import UserError
from utils.evaluation.scoring import RewardScorer


class BadRequest(Exception):
    """What is wrong with a request, sent back to the client with HTTP 400."""


class _Stop(Exception):
    """SIGTERM arrived: leave serve_forever as Ctrl-C does."""


def read_queries(body: bytes) -> list[str]:
    """The texts to score. "prompts" and "labels" are accepted and unused: a reward model scores the whole text."""
    try:
        request = json.loads(body)
    except ValueError as err:
        raise BadRequest(f"the body is not JSON: {err}") from None
    queries = request.get("query") if isinstance(request, dict) else None
    if not isinstance(queries, list):
        raise BadRequest('send a JSON object whose "query" is a list of texts (prompt and answer)')
    for i, text in enumerate(queries):
        if not isinstance(text, str):
            raise BadRequest(f"query {i} is {type(text).__name__}, not a string")
    return queries


def serve(scorer: RewardScorer, host: str, port: int, batch_size: int) -> None:
    """Answer until SIGINT or SIGTERM; requests are read in threads and scored one at a time."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                queries = read_queries(self._body())
            except BadRequest as err:
                return self._reply(400, {"error": str(err)})
            try:
                with lock:
                    rewards, _ = scorer.score(queries, batch_size)
            except Exception as err:  # a fault of this server, not of the request: say so and keep serving
                return self._reply(500, {"error": f"scoring failed: {type(err).__name__}: {err}"})
            bad = [i for i, value in enumerate(rewards) if not math.isfinite(value)]
            if bad:
                return self._reply(500, {"error": f"non-finite scores for queries {bad[:10]}"})
            self._reply(200, {"rewards": rewards})

        def _body(self) -> bytes:
            length = self.headers.get("Content-Length", "")
            if not length.isdigit():
                raise BadRequest(f"need a Content-Length header with the body's size, got {length!r}")
            return self.rfile.read(int(length))

        def _reply(self, status: int, answer: dict[str, Any]) -> None:
            body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def stop(signum: int, frame: Any) -> None:
        raise _Stop

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as err:
        raise UserError(f"--serve cannot listen on {host}:{port}: {err.strerror or err}") from None
    previous = signal.signal(signal.SIGTERM, stop)
    print(f"serving {scorer.model_dir} on http://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, _Stop):
        print("stopped", file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
