"""The SDK's overhead per call, against a real `mandate serve` on loopback.

    python bench.py [--n 2000] [--batch-rounds 20]

Starts `mandate serve` (target/debug/mandate at the repository root, or
$MANDATE_BIN) on a port the OS picks, then measures, one call at a time on one
kept-alive connection:

- `Client.evaluate` against a raw `httpx.Client.post` of the same body (the
  SDK's own cost: headers, request id, deadline, checking the answer);
- `Client.allowed` and `AsyncClient.evaluate`;
- `Client.evaluations` of 1,000 items split into chunks of 100, against raw
  posts of the same ten chunks.

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import httpx

from mandate_client import AsyncClient, Client

HERE = Path(__file__).resolve().parent
SUBJECT = {"type": "user", "id": "carol"}
RESOURCE = {"type": "account", "id": "alice-personal"}
CONTEXT = {"side": "buy", "instrument": "AAPL"}
BODY = {
    "subject": SUBJECT,
    "action": {"name": "place_order"},
    "resource": RESOURCE,
    "context": CONTEXT,
}


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    binary = Path(os.environ.get("MANDATE_BIN") or HERE.parents[1] / "target/debug/mandate")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANDATE_")}
    proc = subprocess.Popen(
        [str(binary), "serve", "--listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    found = threading.Event()
    url: List[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            m = re.search(r"listening on (http://\S+)", raw.decode("utf-8", "replace"))
            if m and not found.is_set():
                url.append(m.group(1).rstrip("/"))
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(60):
        proc.kill()
        sys.exit("mandate serve printed no address")
    for _ in range(600):
        try:
            if httpx.get(url[0] + "/readyz", timeout=2).status_code == 200:
                return proc, url[0]
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    sys.exit("mandate serve never became ready")


def percentiles(samples: List[float]) -> Dict[str, float]:
    s = sorted(samples)
    return {
        "p50": s[len(s) // 2] * 1e6,
        "p99": s[min(len(s) - 1, int(len(s) * 0.99))] * 1e6,
        "mean": statistics.fmean(s) * 1e6,
    }


def measure(fn: Callable[[], Any], n: int, warmup: int) -> Dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return percentiles(samples)


async def measure_async(fn: Callable[[], Any], n: int, warmup: int) -> Dict[str, float]:
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t)
    return percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="calls per latency row")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--batch-rounds", type=int, default=20, help="1,000-item batches timed")
    args = parser.parse_args()

    proc, url = start_server()
    try:
        run(url, args.n, args.warmup, args.batch_rounds)
    finally:
        proc.terminate()
        proc.wait(10)


def run(url: str, n: int, warmup: int, rounds: int) -> None:
    body = json.dumps(BODY, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json"}
    rows: List[tuple[str, Dict[str, float]]] = []

    with httpx.Client(base_url=url, timeout=5) as raw, Client(url) as client:

        def raw_post() -> None:
            r = raw.post("/access/v1/evaluation", content=body, headers=headers)
            assert r.status_code == 200
            assert r.json()["decision"] is True

        def sdk_evaluate() -> None:
            assert client.evaluate(SUBJECT, "place_order", RESOURCE, CONTEXT).decision

        def sdk_allowed() -> None:
            assert client.allowed(SUBJECT, "place_order", RESOURCE, CONTEXT)

        # Interleave in blocks so a slow patch of the machine hits both alike.
        raw_samples: List[Dict[str, float]] = []
        sdk_samples: List[Dict[str, float]] = []
        blocks = 4
        for _ in range(blocks):
            raw_samples.append(measure(raw_post, n // blocks, warmup // blocks))
            sdk_samples.append(measure(sdk_evaluate, n // blocks, warmup // blocks))

        def merge(parts: List[Dict[str, float]]) -> Dict[str, float]:
            return {k: statistics.median(p[k] for p in parts) for k in parts[0]}

        rows.append(("raw `httpx.Client.post` (same body, kept alive)", merge(raw_samples)))
        rows.append(("`Client.evaluate`", merge(sdk_samples)))
        rows.append(("`Client.allowed`", measure(sdk_allowed, n, warmup)))
        assert client.failures == 0

    async def async_rows() -> List[Dict[str, float]]:
        async with AsyncClient(url) as aclient, httpx.AsyncClient(base_url=url, timeout=5) as araw:

            async def one() -> None:
                d = await aclient.evaluate(SUBJECT, "place_order", RESOURCE, CONTEXT)
                assert d.decision

            async def raw_one() -> None:
                r = await araw.post("/access/v1/evaluation", content=body, headers=headers)
                assert r.json()["decision"] is True

            raw_parts, sdk_parts = [], []
            for _ in range(blocks):
                raw_parts.append(await measure_async(raw_one, n // blocks, warmup // blocks))
                sdk_parts.append(await measure_async(one, n // blocks, warmup // blocks))
            return [merge(raw_parts), merge(sdk_parts)]

    araw_row, asdk_row = asyncio.run(async_rows())
    rows.append(("raw `httpx.AsyncClient.post` (asyncio)", araw_row))
    rows.append(("`AsyncClient.evaluate` (asyncio)", asdk_row))

    print(
        f"Python {platform.python_version()}, httpx {httpx.__version__}, "
        f"{os.cpu_count()} CPUs, mandate serve ({url}) on loopback; one call at a time.\n"
    )
    print(f"| one decision, N = {n} | p50 (µs) | p99 (µs) | mean (µs) |")
    print("|---|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['p50']:.0f} | {r['p99']:.0f} | {r['mean']:.0f} |")
    overhead = rows[1][1]["p50"] - rows[0][1]["p50"]
    aoverhead = rows[4][1]["p50"] - rows[3][1]["p50"]
    print(
        f"\nSDK overhead at p50: {overhead:+.0f} µs per call (sync), {aoverhead:+.0f} µs (async).\n"
    )

    # --- a 1,000-item batch, chunks of 100 ---------------------------------------------
    actions = ["place_order", "view_account", "cancel_order", "withdraw"]
    items = [
        {
            "action": {"name": actions[i % 4]},
            **({"context": CONTEXT} if actions[i % 4] == "place_order" else {}),
        }
        for i in range(1000)
    ]
    chunk = 100
    with (
        Client(url, max_batch_items=chunk, timeout=10) as client,
        httpx.Client(base_url=url, timeout=10) as raw,
    ):

        def sdk_batch() -> None:
            out = client.evaluations(items, subject=SUBJECT, resource=RESOURCE)
            assert len(out) == 1000

        bodies = [
            json.dumps(
                {"subject": SUBJECT, "resource": RESOURCE, "evaluations": items[i : i + chunk]}
            ).encode()
            for i in range(0, len(items), chunk)
        ]

        def raw_batch() -> None:
            for b in bodies:
                r = raw.post("/access/v1/evaluations", content=b, headers=headers)
                assert len(r.json()["evaluations"]) == chunk

        batch_rows = []
        for name, fn in (
            ("raw `httpx` posts of the same 10 chunks", raw_batch),
            ("`Client.evaluations` (`max_batch_items=100`)", sdk_batch),
        ):
            fn()
            samples = []
            for _ in range(rounds):
                t = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t)
            med = statistics.median(samples)
            batch_rows.append((name, med, 1000 / med))

    print(f"| 1,000 items in chunks of 100, {rounds} rounds | median per batch (ms) | items/s |")
    print("|---|---:|---:|")
    for name, med, rate in batch_rows:
        print(f"| {name} | {med * 1e3:.1f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
