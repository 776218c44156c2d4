"""An agent written to seed 000's protocol: it dials AgntService.Connect, names itself (agent_id, worker_id)
in its first message, runs every ServerMessage's query on one SQLite file and answers with a QueryResult
(rows as a JSON array of objects, the named table's description in meta_data, errors in message).
Reconnects with backoff when the stream ends; exits 0 on SIGTERM or SIGINT. Logs go to stderr only.
"""

import argparse
import asyncio
import base64
import json
import logging
import math
import os
import random
import signal
import sqlite3
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("seed_agent")

HEARTBEAT_SECONDS = 10.0
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0
# A stream that lived this long was a real session: the next reconnect starts from the first backoff.
HEALTHY_SESSION_SECONDS = 5.0
# Queries run at once; the hub sends up to 8 to a seed worker, the rest wait here.
QUERY_THREADS = 4
MAX_SAFE_INTEGER = 2**53 - 1
# Refusals that retrying cannot cure: the log says what to fix (the agent keeps retrying meanwhile).
AUTH_HINTS = {
    "UNAUTHENTICATED": " (check --token: an agent token of the hub)",
    "PERMISSION_DENIED": " (the token must be an agent token scoped to pool --agent-id)",
    "INVALID_ARGUMENT": " (check --agent-id and --worker-id)",
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="A seed 000 protocol agent that answers SQL from a SQLite file.")
    p.add_argument("--gen", required=True, help="directory holding app_pb2.py and app_pb2_grpc.py (generate.sh)")
    p.add_argument("--address", required=True, help="the hub's host:port")
    p.add_argument("--token", default="", help="an agent token of pool AGENT_ID, sent as 'authorization: Bearer'")
    p.add_argument("--agent-id", required=True, help="the agent group (the hub's pool) this worker joins")
    p.add_argument("--worker-id", required=True, help="this worker's name within the group")
    p.add_argument("--sqlite", required=True, help="the SQLite database file the queries run on")
    args = p.parse_args()
    if not os.path.isfile(args.sqlite):
        p.error(f"--sqlite {args.sqlite}: no such file (the agent does not create databases)")
    return args


# ---- SQL on SQLite (runs in worker threads) ----


def json_value(v: object) -> object:
    """A SQLite value as JSON that keeps its meaning (the rules of src/common/sql-result.ts)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, int):
        # Beyond 2^53 a JSON number loses digits in JavaScript: the hub gets the decimal string.
        return v if abs(v) <= MAX_SAFE_INTEGER else str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
    return v


def unique_names(names: list[str]) -> list[str]:
    """Duplicate column names get _2, _3... so that no value is lost in the row objects (as the hub does)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0) + 1
        seen[n] = k
        out.append(n if k == 1 else f"{n}_{k}")
    return out


class SqliteRunner:
    """Opens one connection per query (cheap for SQLite) so that queries in different threads never share one."""

    def __init__(self, path: str) -> None:
        # mode=rw: a file removed under us is an error, not a new empty database.
        self.uri = "file:" + os.path.abspath(path) + "?mode=rw"
        self.lock = threading.Lock()
        self.open: set[sqlite3.Connection] = set()

    def run(self, query: str, tbl_name: str) -> tuple[str, str, str]:
        """Returns (json, meta_data, message) for a QueryResult."""
        conn = sqlite3.connect(self.uri, uri=True, timeout=5.0, isolation_level=None, check_same_thread=False)
        with self.lock:
            self.open.add(conn)
        try:
            meta = describe_table(conn, tbl_name) if tbl_name else ""
            cur = conn.execute(query)
            if cur.description is None:
                return "[]", meta, "ok"
            names = unique_names([d[0] for d in cur.description])
            rows = [dict(zip(names, (json_value(v) for v in row))) for row in cur]
            return json.dumps(rows, ensure_ascii=False, allow_nan=False), meta, "ok"
        except (sqlite3.Error, sqlite3.Warning, ValueError) as err:
            return "", "", f"error: {err}"
        finally:
            with self.lock:
                self.open.discard(conn)
            conn.close()

    def interrupt_all(self) -> None:
        """Stops the statements still running (on shutdown)."""
        with self.lock:
            for conn in self.open:
                conn.interrupt()


class NoSuchTable(sqlite3.Error):
    pass


def describe_table(conn: sqlite3.Connection, name: str) -> str:
    schema, table = "main", name
    rows = conn.execute("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?)", (name,)).fetchall()
    if not rows and "." in name:
        schema, table = name.split(".", 1)
        rows = conn.execute(
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?, ?)", (table, schema)
        ).fetchall()
    if not rows:
        raise NoSuchTable(f"no such table: {name}")
    columns = [{"name": r[0], "type": (r[1] or "").lower(), "nullable": not r[2]} for r in rows]
    primary_key = [r[0] for r in sorted((r for r in rows if r[3] > 0), key=lambda r: r[3])]
    return json.dumps({"table": name, "columns": columns, "primary_key": primary_key}, ensure_ascii=False)


# ---- the stream ----


class SeedAgent:
    def __init__(self, args: argparse.Namespace, pb2, pb2_grpc, grpc) -> None:
        self.args = args
        self.pb2 = pb2
        self.pb2_grpc = pb2_grpc
        self.grpc = grpc
        self.runner = SqliteRunner(args.sqlite)
        self.pool = ThreadPoolExecutor(max_workers=QUERY_THREADS, thread_name_prefix="query")
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        backoff = BACKOFF_FIRST
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                reason = await self.session()
                if self.stopping.is_set():
                    break
                if time.monotonic() - started >= HEALTHY_SESSION_SECONDS:
                    backoff = BACKOFF_FIRST
                # Jitter keeps many workers from redialing a restarted hub in the same instant.
                delay = backoff * (0.5 + random.random() / 2)
                log.warning("stream ended (%s); reconnecting in %.1fs", reason, delay)
                try:
                    await asyncio.wait_for(self.stopping.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            self.runner.interrupt_all()
            self.pool.shutdown(wait=True, cancel_futures=True)
            log.info("stopped")

    async def session(self) -> str:
        """One Connect stream, until it ends or the agent stops; returns why it ended."""
        grpc, pb2 = self.grpc, self.pb2
        metadata = (("authorization", f"Bearer {self.args.token}"),) if self.args.token else None
        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        async with grpc.aio.insecure_channel(self.args.address, options=options) as channel:
            call = self.pb2_grpc.AgntServiceStub(channel).Connect(metadata=metadata)
            write_lock = asyncio.Lock()
            tasks: set[asyncio.Task] = set()

            async def send(msg) -> None:
                # grpc.aio allows one write at a time on a stream.
                async with write_lock:
                    await call.write(msg)

            async def heartbeats() -> None:
                while True:
                    await asyncio.sleep(HEARTBEAT_SECONDS)
                    await send(pb2.AgentMessage(heartbeat=pb2.Heartbeat(timestamp=int(time.time() * 1000))))

            async def answer(cmd) -> None:
                try:
                    loop = asyncio.get_running_loop()
                    body, meta, message = await loop.run_in_executor(
                        self.pool, self.runner.run, cmd.query, cmd.tbl_name
                    )
                    if message != "ok":
                        log.info("request %s failed: %s", cmd.request_id, message)
                    result = pb2.QueryResult(request_id=cmd.request_id, json=body, meta_data=meta)
                    await send(pb2.AgentMessage(query_result=result, message=message))
                except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as err:
                    # The stream is gone: the hub fails the task; nothing more to do here.
                    log.warning("request %s: result not sent: %s", cmd.request_id, err)

            async def receive() -> str:
                # The seed protocol's identity: agent_id and worker_id on the first message.
                hello = pb2.AgentMessage(
                    agent_id=self.args.agent_id,
                    worker_id=self.args.worker_id,
                    heartbeat=pb2.Heartbeat(timestamp=int(time.time() * 1000)),
                )
                await send(hello)
                log.info("identity sent to %s", self.args.address)
                tasks.add(asyncio.create_task(heartbeats()))
                async for cmd in call:
                    t = asyncio.create_task(answer(cmd))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                return "closed by the hub"

            recv = asyncio.create_task(receive())
            stop = asyncio.create_task(self.stopping.wait())
            try:
                await asyncio.wait({recv, stop}, return_when=asyncio.FIRST_COMPLETED)
                if recv.done():
                    try:
                        return recv.result()
                    except grpc.aio.AioRpcError as err:
                        hint = AUTH_HINTS.get(err.code().name, "")
                        return f"{err.code().name}: {err.details()}{hint}"
                    except (grpc.aio.UsageError, asyncio.InvalidStateError) as err:
                        return f"stream error: {err}"
                # Stopping: close our side so the hub sees a clean end and closes its own; past a second
                # the stream is dropped.
                try:
                    async with write_lock:
                        await asyncio.wait_for(call.done_writing(), 1.0)
                    await asyncio.wait({recv}, timeout=1.0)
                except Exception:  # noqa: BLE001 - the stream may already be gone; we leave either way
                    pass
                return "stopping"
            finally:
                for t in (recv, stop, *tasks):
                    t.cancel()
                call.cancel()
                await asyncio.gather(recv, stop, *tasks, return_exceptions=True)


def main() -> int:
    args = parse_args()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s seed_agent {args.agent_id}:{args.worker_id} %(levelname)s %(message)s",
    )
    # The generated modules import each other by their bare names, so their directory goes on the path.
    sys.path.insert(0, args.gen)
    import grpc
    import grpc.aio
    import app_pb2
    import app_pb2_grpc

    asyncio.run(SeedAgent(args, app_pb2, app_pb2_grpc, grpc).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
