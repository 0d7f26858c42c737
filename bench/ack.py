"""Ack latency of ``layerbot serve`` beside a bare slack-bolt app, and serve's event-loop lag.

Starts a local Slack Web API double (bench/slack_peer.py: in a process of its own, so taking
the confirm cards does not share the event loop that times the acks), writes a catalog with
two templates (directory layers of ``--layer-mib`` MiB each), runs ``layerbot serve`` and a
bare slack-bolt AsyncApp (bench/bare_bolt.py: a ``/publish`` listener that only acks, on the
same aiohttp stack) as subprocesses on 127.0.0.1, then:

1. idle: ``--rounds`` times, ``--requests`` concurrent signed ``/publish`` to layerbot (then
   waits for its confirm cards) and the same to bare bolt; reports each one's p50/p99 ack
   time, the ratio of the p99s, and serve's worst loop lag over the bursts and the work they
   started (planning, confirm cards);
2. confirms both templates (two composites at once, ``max_parallel: 2``) and reads serve's
   worst loop lag while they run (``GET /healthz?window=``);
3. the rounds of 1 again while two uncached composites run, and the loop lag over them.

Targets: layerbot's p99 <= 1.5x bare bolt's (idle and during composites), serve's worst
loop lag < 20 ms (each phase). Exit status 1 if a target is missed or the composites ended
before the bursts of 3 did (then use a larger --layer-mib).

Example: .venv/bin/python bench/ack.py --requests 100 --layer-mib 256
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from slack_sdk.signature import SignatureVerifier

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.store.task_store import TaskStore  # noqa: E402

SECRET = "bench-signing-secret"
TOKEN = "xoxb-bench-token"
SLACK_LIMIT = 3.0
TARGET_RATIO = 1.5
TARGET_LAG = 0.020

CATALOG = """\
layers:
  os: {{kind: os, source: layers/os}}
  app-a: {{kind: app, source: layers/app-a}}
  app-b: {{kind: app, source: layers/app-b}}
connectors:
  folder: {{type: local, path: ./published, format: qcow2}}
templates:
  bench-a: {{description: Bench image A, os_layer: os, app_layers: [app-a], connector: folder,
             disk: {{size_gib: {size}}}}}
  bench-b: {{description: Bench image B, os_layer: os, app_layers: [app-b], connector: folder,
             disk: {{size_gib: {size}}}}}
runner: {{max_parallel: 2, cache_dir: .layerbot/cache, work_dir: .layerbot/work}}
"""


def write_layer(root: Path, mib: int, files: int = 64) -> None:
    root.mkdir(parents=True)
    chunk = max(1, mib * 1024 * 1024 // files)
    for i in range(files):
        sub = root / "opt" / f"d{i % 8}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.bin").write_bytes(os.urandom(chunk))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def signed(body: str) -> dict[str, str]:
    ts = str(int(time.time()))
    return {"Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": str(SignatureVerifier(SECRET).generate_signature(timestamp=ts,
                                                                                  body=body))}


class Peer:
    """bench/slack_peer.py: the Slack Web API and the response URLs."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "slack_peer.py")],
                                        cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.url, self.control = self.process.stdout.readline().split()
        self.session = session
        self._responses = 0

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def new_response_url(self) -> str:
        self._responses += 1
        return f"{self.url}/response/{self._responses}"

    async def calls(self, method: str) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.control}/calls/{method}") as resp:
            return list(await resp.json())

    async def answers(self) -> int:
        return len(await self.calls("response_url"))


def command(double: Peer, text: str, user: str) -> str:
    return urllib.parse.urlencode({
        "team_id": "T0001", "channel_id": "CBENCH", "user_id": user, "command": "/publish",
        "text": text, "response_url": double.new_response_url(), "trigger_id": "t",
        "api_app_id": "A0001",
    })


async def one(session: aiohttp.ClientSession, url: str, body: str) -> float:
    headers = signed(body)
    started = time.perf_counter()
    async with session.post(url, data=body.encode(), headers=headers) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status} from {url}")
    return time.perf_counter() - started


async def burst(session: aiohttp.ClientSession, url: str, double: Peer, n: int,
                text: str) -> list[float]:
    bodies = [command(double, text, f"UBENCH{i}") for i in range(n)]
    return list(await asyncio.gather(*(one(session, url, b) for b in bodies)))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


@dataclass
class Server:
    name: str
    base: str
    process: subprocess.Popen[bytes]
    session: aiohttp.ClientSession

    @property
    def events(self) -> str:
        return self.base + "/slack/events"

    def cpu(self) -> float:
        """CPU seconds (user + system) the server's own process has used so far (Linux)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def lag(self, window: float) -> float:
        """The worst event-loop lag (seconds) the server saw over the last ``window`` s."""
        async with self.session.get(self.base + "/healthz", params={"window": f"{window:.2f}"}) as resp:
            return float((await resp.json())["loop_lag_ms"]) / 1000

    async def started(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                async with self.session.get(self.base + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start")
            await asyncio.sleep(0.1)


@dataclass
class Phase:
    """The ack times of both servers over one phase's rounds, and serve's loop lag."""
    name: str
    layerbot: list[float] = field(default_factory=list)
    bolt: list[float] = field(default_factory=list)
    lag: float = 0.0
    bolt_lag: float = 0.0
    cards: list[float] = field(default_factory=list)
    cpu: float = 0.0
    bolt_cpu: float = 0.0

    @property
    def ratio(self) -> float:
        return pct(self.layerbot, 99) / pct(self.bolt, 99)

    def report(self) -> list[str]:
        def row(name: str, lat: list[float]) -> str:
            return (f"  {name:9} n={len(lat)} p50={ms(statistics.median(lat))} p99={ms(pct(lat, 99))} "
                    f"max={ms(max(lat))}")
        p99 = pct(self.layerbot, 99)
        return [f"{self.name}:", row("layerbot", self.layerbot), row("bare bolt", self.bolt),
                f"  p99 ratio layerbot/bolt {self.ratio:.2f} (target <= {TARGET_RATIO}); "
                f"layerbot's p99 is {p99 / SLACK_LIMIT:.1%} of Slack's 3 s",
                f"  serve's worst loop lag {ms(self.lag)} (target < {ms(TARGET_LAG)}; bare bolt's "
                f"{ms(self.bolt_lag)}); all confirm cards posted {ms(max(self.cards))} after a "
                f"burst began (worst round)",
                f"  CPU per command: serve {ms(self.cpu / len(self.layerbot))} (ack, plan request, "
                f"card; not the planner process), bare bolt {ms(self.bolt_cpu / len(self.bolt))}"]

    def missed(self) -> bool:
        return self.ratio > TARGET_RATIO or self.lag >= TARGET_LAG


async def main(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="layerbot-bench-"))
    print(f"writing layers ({3 * args.layer_mib} MiB) in {tmp}", flush=True)
    for name in ("os", "app-a", "app-b"):
        write_layer(tmp / "layers" / name, args.layer_mib)
    (tmp / "layerbot.yml").write_text(CATALOG.format(size=args.disk_gib))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    double = Peer(session)
    env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_API_URL": double.api_url}
    env.pop("SLACK_APP_TOKEN", None)
    db = tmp / "layerbot.db"
    ports = free_port(), free_port()
    processes = [
        subprocess.Popen([sys.executable, "-m", "bot.cli.commands", "--config", str(tmp / "layerbot.yml"),
                          "--db", str(db), "serve", "--host", "127.0.0.1", "--port", str(ports[0])],
                         cwd=ROOT, env=env),
        subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_bolt.py"), "--port", str(ports[1])],
                         cwd=ROOT, env=env),
    ]
    failed = False
    try:
        async with session:
            layerbot, bolt = (Server(name, f"http://127.0.0.1:{port}", proc, session)
                              for name, port, proc in zip(("layerbot serve", "bare bolt"), ports, processes,
                                                          strict=True))
            async def answered(n: int) -> bool:
                return await double.answers() >= n

            for server in (layerbot, bolt):
                await server.started()
                # warm-up: connections, imports, bolt's auth.test (layerbot answers help too)
                await one(session, server.events, command(double, "help", "UWARM"))
            await wait_for(lambda: answered(1), 30, "warm-up")

            async def rounds(phase: Phase, text: str) -> None:
                """Bursts to each server in turn; layerbot's confirm cards are awaited before
                bolt's burst, so its after-ack work is measured in its window only."""
                for _ in range(args.rounds):
                    before = await double.answers()
                    cpu = layerbot.cpu()
                    began = time.monotonic()
                    phase.layerbot += await burst(session, layerbot.events, double, args.requests, text)
                    await wait_for(lambda: answered(before + args.requests), 120,  # noqa: B023
                                   "confirm cards")
                    phase.cards.append(time.monotonic() - began)
                    phase.cpu += layerbot.cpu() - cpu
                    cpu = bolt.cpu()
                    phase.lag = max(phase.lag, await layerbot.lag(time.monotonic() - began))
                    began = time.monotonic()
                    phase.bolt += await burst(session, bolt.events, double, args.requests, text)
                    phase.bolt_cpu += bolt.cpu() - cpu
                    phase.bolt_lag = max(phase.bolt_lag, await bolt.lag(time.monotonic() - began))

            idle = Phase(f"{args.rounds}x {args.requests} concurrent /publish, idle")
            await rounds(idle, "bench-a bench-b")
            print("\n".join(idle.report()), flush=True)
            failed |= idle.missed()

            store = TaskStore(db)
            cards = [c for c in await double.calls("response_url")
                     if "intent_confirm" in json.dumps(c.get("blocks"))]

            def statuses(intent: str = "") -> list[str]:
                rows = store.db.execute("SELECT status FROM tasks WHERE idempotency_key LIKE ?",
                                        [intent + "%"]).fetchall()
                return [r[0] for r in rows]

            def when(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
                async def checked() -> bool:
                    return check()
                return checked

            async def two_composites(card: dict[str, Any]) -> str:
                """Confirm a card of both templates: two composites start at once."""
                intent = next(e["value"] for b in card["blocks"] for e in b.get("elements") or []
                              if e.get("action_id") == "intent_confirm")
                owner = store.db.execute("SELECT user FROM slack_intents WHERE id = ?",
                                         [intent]).fetchone()[0]
                payload = {"type": "block_actions", "team": {"id": "T0001"},
                           "user": {"id": owner}, "channel": {"id": "CBENCH"},
                           "response_url": double.new_response_url(),
                           "actions": [{"action_id": "intent_confirm", "value": intent,
                                        "type": "button", "block_id": "intent"}]}
                await one(session, layerbot.events, urllib.parse.urlencode({"payload": json.dumps(payload)}))
                await wait_for(when(lambda: statuses(intent).count("compositing") == 2), 60, "two composites")
                return str(intent)

            async def composited(intent: str) -> None:
                await wait_for(when(lambda: not {"queued", "compositing"} & set(statuses(intent))), 900,
                               "composites to end")

            async def finished(intent: str) -> list[str]:
                await wait_for(when(lambda: set(statuses(intent)) <= {"done", "failed"}), 900,
                               "tasks to finish")
                return statuses(intent)

            # 2. two composites at once, nothing else: the loop's worst lag
            started = time.monotonic()
            intent = await two_composites(cards[0])
            await composited(intent)
            window = time.monotonic() - started
            lag = await layerbot.lag(window)
            print(f"two composites, nothing else ({window:.1f} s, {os.cpu_count()} CPUs, "
                  f"load {os.getloadavg()[0]:.1f}): serve's worst loop lag {ms(lag)} "
                  f"(target < {ms(TARGET_LAG)})", flush=True)
            print("  tasks: " + ", ".join(await finished(intent)))
            failed |= lag >= TARGET_LAG

            # 3. the same rounds while two (uncached) composites run
            shutil.rmtree(tmp / ".layerbot" / "cache", ignore_errors=True)
            shutil.rmtree(tmp / "published", ignore_errors=True)
            intent = await two_composites(cards[1])
            busy = Phase(f"{args.rounds}x {args.requests} concurrent /publish during two composites")
            await rounds(busy, "bench-a")
            still = statuses(intent).count("compositing")
            print("\n".join(busy.report()))
            print(f"  composites still running after the bursts: {still} of 2, load "
                  f"{os.getloadavg()[0]:.1f}" + ("" if still == 2 else
                                                  " -- NOT MEASURED: use a larger --layer-mib"))
            print("  tasks: " + ", ".join(await finished(intent)))
            failed |= busy.missed() or still < 2
            store.close()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            await asyncio.to_thread(process.wait, 60)
        double.process.terminate()
        await asyncio.to_thread(double.process.wait, 60)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"targets: p99 <= {TARGET_RATIO}x bare bolt's, loop lag < {ms(TARGET_LAG)}:",
          "MISSED" if failed else "met")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="bursts per server and phase")
    parser.add_argument("--layer-mib", type=int, default=512, help="size of each of 3 layers")
    parser.add_argument("--disk-gib", type=int, default=4)
    sys.exit(asyncio.run(main(parser.parse_args())))
