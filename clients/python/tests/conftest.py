"""A real `mandate serve`, the shared cases, and one driver per client kind."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import httpx
import pytest

from mandate_client import AsyncClient, Client

HERE = Path(__file__).resolve()
REPO = HERE.parents[3]
CASES_FILE = HERE.parents[2] / "cases.json"


def load_cases() -> Dict[str, Any]:
    with CASES_FILE.open() as f:
        data: Dict[str, Any] = json.load(f)
    return data


CASES = load_cases()

REAL_TIMEOUT = 5.0
"""The deadline of the tests that ask the real server about something else than time
(concurrency, paging, chunking): it is a debug build on a shared two-core machine.
The cases of cases.json keep the default deadline."""


def mandate_bin() -> Path:
    return Path(os.environ.get("MANDATE_BIN") or REPO / "target/debug/mandate")


class MandateServer:
    """``mandate serve`` on its embedded defaults, on a port the OS picks."""

    def __init__(self, binary: Path) -> None:
        if not binary.is_file():
            pytest.fail(
                f"no mandate binary at {binary}: build it (cargo build) or set MANDATE_BIN",
                pytrace=False,
            )
        # The embedded defaults: no MANDATE_* setting from the caller's environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MANDATE_")}
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # the decision log
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(HERE.parent),
        )
        self.stderr: List[str] = []
        found = threading.Event()
        self.url = ""

        def read() -> None:
            assert self.proc.stderr is not None
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                self.stderr.append(line)
                m = re.search(r"listening on (http://\S+)", line)
                if m and not found.is_set():
                    self.url = m.group(1).rstrip("/")
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(60):
            self.stop()
            pytest.fail("mandate serve printed no address:\n" + "\n".join(self.stderr))
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                pytest.fail("mandate serve never became ready:\n" + "\n".join(self.stderr))
            time.sleep(0.05)
        m = re.match(r"http://([^:/]+):(\d+)", self.url)
        assert m
        self.host, self.port = m.group(1), int(m.group(2))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def mandate() -> Iterator[MandateServer]:
    server = MandateServer(mandate_bin())
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_mandate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set MANDATE_URL and MANDATE_TOKEN themselves when they mean to."""
    monkeypatch.delenv("MANDATE_URL", raising=False)
    monkeypatch.delenv("MANDATE_TOKEN", raising=False)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- one driver per client kind, so each scenario runs on both ----------------


class SyncDriver:
    kind = "sync"

    def __init__(self, url: Optional[str], **kwargs: Any) -> None:
        self.client = Client(url, **kwargs)

    def allowed(self, *args: Any, **kwargs: Any) -> bool:
        return self.client.allowed(*args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        return self.client.evaluate(*args, **kwargs)

    def evaluations(self, *args: Any, **kwargs: Any) -> Any:
        return self.client.evaluations(*args, **kwargs)

    def search(self, kind: str, *args: Any, **kwargs: Any) -> Tuple[List[Any], Any]:
        it = getattr(self.client, f"search_{kind}s")(*args, **kwargs)
        return list(it), it

    def search_pages(self, kind: str, *args: Any, **kwargs: Any) -> List[Any]:
        return list(getattr(self.client, f"search_{kind}s")(*args, **kwargs).pages())

    @property
    def failures(self) -> int:
        return self.client.failures

    @property
    def retries(self) -> int:
        return self.client.retries

    def close(self) -> None:
        self.client.close()


class AsyncDriver:
    """Runs the AsyncClient on one event loop for the whole test (connections are reused)."""

    kind = "async"

    def __init__(self, url: Optional[str], **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = AsyncClient(url, **kwargs)

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def allowed(self, *args: Any, **kwargs: Any) -> bool:
        result: bool = self._run(self.client.allowed(*args, **kwargs))
        return result

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        return self._run(self.client.evaluate(*args, **kwargs))

    def evaluations(self, *args: Any, **kwargs: Any) -> Any:
        return self._run(self.client.evaluations(*args, **kwargs))

    def search(self, kind: str, *args: Any, **kwargs: Any) -> Tuple[List[Any], Any]:
        it = getattr(self.client, f"search_{kind}s")(*args, **kwargs)

        async def collect() -> List[Any]:
            return [r async for r in it]

        return self._run(collect()), it

    def search_pages(self, kind: str, *args: Any, **kwargs: Any) -> List[Any]:
        it = getattr(self.client, f"search_{kind}s")(*args, **kwargs)

        async def collect() -> List[Any]:
            return [pg async for pg in it.pages()]

        result: List[Any] = self._run(collect())
        return result

    @property
    def failures(self) -> int:
        return self.client.failures

    @property
    def retries(self) -> int:
        return self.client.retries

    def close(self) -> None:
        self._run(self.client.aclose())
        self.loop.close()


Driver = Any
MakeDriver = Callable[..., Driver]


@pytest.fixture(params=["sync", "async"])
def make(request: pytest.FixtureRequest) -> Iterator[MakeDriver]:
    """``make(url, **client_kwargs)``: a client of the parametrized kind, closed after the test."""
    made: List[Any] = []

    def factory(url: Optional[str], **kwargs: Any) -> Any:
        driver = (SyncDriver if request.param == "sync" else AsyncDriver)(url, **kwargs)
        made.append(driver)
        return driver

    yield factory
    for d in made:
        d.close()


def timed(fn: Callable[[], Any]) -> Tuple[Any, float]:
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start
