"""A remote reward server, spoken to in OpenRLHF's protocol so that servers written for it work unchanged.

The client POSTs {"query": [prompt + answer texts], "prompts": [prompt texts], "labels": [labels]} to the URL as
given and reads {"rewards": [one number per query]}; other keys of the reply (OpenRLHF's "scores" for its dynamic
filtering, "extra_logs") are ignored, as its trainer takes the reward from "rewards" alone.
"""
from __future__ import annotations

import http.client
import json
import math
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

from utils.errors import BatchFailed, UserError


class RewardServerError(BatchFailed):
    """The reward server gave no usable rewards: the message names the URL, the attempts and the last cause."""


def _one_line(text: str, limit: int = 300) -> str:
    """A server's error text on one line, cut short, so the run's error stays one line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


class _Retryable(Exception):
    """A failure that another attempt may not repeat: no connection, a timeout, HTTP 5xx."""


class RemoteReward:
    def __init__(self, url: str, timeout: float = 60.0, retries: int = 2, batch_size: int | None = None,
                 backoff: float = 1.0) -> None:
        """`timeout`: seconds to wait on the server within one request; `retries`: further attempts of a request
        after a connection error, a timeout or HTTP 5xx, `backoff` seconds apart, doubling; `batch_size`: queries per
        request (None: all in one)."""
        if not url.startswith(("http://", "https://")):
            raise UserError(f"--reward_url {url!r}: give an http:// or https:// URL")
        if timeout <= 0 or retries < 0 or (batch_size is not None and batch_size < 1):
            raise UserError(f"reward server {url}: need timeout > 0, retries >= 0 and batch size >= 1, got "
                            f"{timeout}, {retries} and {batch_size}")
        self.url, self.timeout, self.retries, self.batch_size, self.backoff = url, timeout, retries, batch_size, backoff

    def __call__(self, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any] | None = None
                 ) -> list[float]:
        """One reward per query. Without labels each is sent as "", as OpenRLHF sends a dataset without a label
        column."""
        labels = [""] * len(queries) if labels is None else list(labels)
        if not len(queries) == len(prompts) == len(labels):
            raise ValueError(f"{len(queries)} queries, {len(prompts)} prompts and {len(labels)} labels")
        size = self.batch_size or max(len(queries), 1)
        rewards: list[float] = []
        for start in range(0, len(queries), size):
            chunk = slice(start, start + size)
            rewards += self._post({"query": list(queries[chunk]), "prompts": list(prompts[chunk]),
                                   "labels": labels[chunk]})
        return rewards

    def _post(self, payload: dict[str, list]) -> list[float]:
        body = json.dumps(payload).encode()
        attempts = self.retries + 1
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return self._rewards(self._request(body), len(payload["query"]))
            except _Retryable as err:
                cause = err
        raise RewardServerError(f"reward server {self.url}: no rewards after {attempts} attempt{'s' * (attempts > 1)} "
                                f"({self.timeout:g} s timeout each); last: {cause}")

    def _request(self, body: bytes) -> bytes:
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"},
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            detail = _one_line(err.read().decode(errors="replace"))
            if err.code >= 500:
                raise _Retryable(f"HTTP {err.code}: {detail}") from None
            raise RewardServerError(f"reward server {self.url} refused the request (HTTP {err.code}, not retried): "
                                    f"{detail}") from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError):  # while connecting
                raise _Retryable(f"no answer within {self.timeout:g} s") from None
            raise _Retryable(f"cannot connect: {err.reason}") from None
        except TimeoutError:  # while waiting for the reply
            raise _Retryable(f"no answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as err:
            raise _Retryable(f"connection failed: {type(err).__name__}: {err}") from None

    def _rewards(self, raw: bytes, expected: int) -> list[float]:
        """The reply's rewards, refused unless they are `expected` finite numbers: a malformed reply is a broken
        server, which another attempt would not mend."""
        try:
            reply = json.loads(raw)
        except ValueError:
            raise self._malformed(f"not JSON: {_one_line(raw.decode(errors='replace'), 120)}") from None
        rewards = reply.get("rewards") if isinstance(reply, dict) else None
        if not isinstance(rewards, list):
            raise self._malformed(f'no "rewards" list in {_one_line(json.dumps(reply), 120)}')
        if len(rewards) != expected:
            raise self._malformed(f"{len(rewards)} rewards for {expected} queries")
        for i, value in enumerate(rewards):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise self._malformed(f"reward {i} is {json.dumps(value)}, not a finite number")
        return [float(value) for value in rewards]

    def _malformed(self, what: str) -> RewardServerError:
        return RewardServerError(f"reward server {self.url} answered with a malformed reply (not retried): {what}")
