"""Async jobs (`POST /v1/jobs`) in Redis: what is stored, and the loop in every process that runs them.

Not to be confused with `server/jobs.py`, whose `Job` is one analysis request's lifecycle: a queued job, once
picked up, runs as exactly such a `Job` (same admission, cache, pipeline, metrics), only its events go to Redis.

Layout under `<redis.key_prefix>:` (every key expires after `jobs.ttl_s`):
- `job:<id>` hash: owner (the API key's id), status queued|running|done|failed, attempts, consumer, options,
  answer or error (JSON), callback_url, created_at / updated_at (unix seconds);
- `job:<id>:events` stream: the job's events in order (label, cue, segment, token, done | error; `restarted`
  when another process starts it again), so a reader replays them from the start and then waits for more;
- `job:<id>:video`, `job:<id>:audio`: the uploads, deleted when the job ends;
- `jobs:queue` stream read by the consumer group `workers` (one consumer per process): an entry stays pending
  until its job ends. A running job's process resets the entry's idle time every `claim_idle_s / 3`; any
  process takes over an entry idle longer than `claim_idle_s` (XAUTOCLAIM), i.e. a job whose process died.
  The job's `attempts` counts starts: past `jobs.max_attempts` it is marked failed instead of run again;
- `jobs:active` sorted set: jobs not yet ended (the backlog bound and metric);
- `idem:<owner>:<sha256(Idempotency-Key)>`: the job an Idempotency-Key created, with a hash of its request.

Every write a running job makes checks, inside one Lua script, that this process still owns the job, so a
process that was presumed dead and comes back can never overwrite what its successor wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from redis.exceptions import ResponseError

from engines.errors import Overloaded
from server.errors import IdempotencyConflict, InvalidField
from server.redis_state import BLOCK_MS, RedisState, RedisUnavailable
from xemo.schemas import AnalyzeOptions

if TYPE_CHECKING:
    from server.lifecycle import ServerState

log = logging.getLogger("xemo.jobs")

GROUP = "workers"
TERMINAL = ("done", "failed")
MAX_IDEMPOTENCY_KEY = 255

# KEYS: hash, active, queue, idem. ARGV: id, owner, now, ttl_ms, max_backlog, options, callback, idem_value, use_idem
_SUBMIT = """
local now, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
if ARGV[9] == '1' then
  local prev = redis.call('GET', KEYS[4])
  if prev then return {'exists', prev} end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl / 1000)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return {'full', ''} end
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'status', 'queued', 'attempts', 0, 'consumer', '',
  'options', ARGV[6], 'callback_url', ARGV[7], 'created_at', ARGV[3], 'updated_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('XADD', KEYS[3], '*', 'id', ARGV[1])
if ARGV[9] == '1' then redis.call('SET', KEYS[4], ARGV[8], 'PX', ttl) end
return {'ok', ''}
"""
# KEYS: hash, events, active. ARGV: me, now, max_attempts, ttl_ms, id, lost_event, lost_error.
_START = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'gone', 0} end
if st == 'done' or st == 'failed' then return {'terminal', 0} end
local a = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if a > tonumber(ARGV[3]) then
  redis.call('HINCRBY', KEYS[1], 'attempts', -1)
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[7], 'consumer', '', 'updated_at', ARGV[2])
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[5])
  return {'exhausted', a}
end
if a > 1 then redis.call('XADD', KEYS[2], '*', 'e', '{"type":"restarted","attempt":' .. a .. '}') end
redis.call('HSET', KEYS[1], 'status', 'running', 'consumer', ARGV[1], 'updated_at', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {'run', a}
"""
# KEYS: hash, events. ARGV: me, event.
_APPEND = """
if redis.call('HGET', KEYS[1], 'consumer') ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
return 1
"""
# KEYS: hash, events, active, video, audio. ARGV: me, status, field, value, event, now, ttl_ms, id.
_FINISH = """
if redis.call('HGET', KEYS[1], 'consumer') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], ARGV[3], ARGV[4], 'consumer', '', 'updated_at', ARGV[6])
redis.call('XADD', KEYS[2], '*', 'e', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('ZREM', KEYS[3], ARGV[8])
redis.call('DEL', KEYS[4], KEYS[5])
return 1
"""
# KEYS: hash, queue. ARGV: me, group, entry. Resets the entry's idle time while this process owns the job.
_HEARTBEAT = """
if redis.call('HGET', KEYS[1], 'consumer') ~= ARGV[1] then return 0 end
redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[1], 0, ARGV[3], 'JUSTID')
return 1
"""
# KEYS: hash, queue. ARGV: me, group, entry, id, now. A job this process gives back (shutdown): queued again at once.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'consumer') ~= ARGV[1] then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'consumer', '', 'updated_at', ARGV[5])
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
redis.call('XADD', KEYS[2], '*', 'id', ARGV[4])
return 1
"""


class _GiveBack(Exception):
    """This process stops taking jobs (draining) before the job got a running slot: queue it for another."""


def new_job_id() -> str:
    return uuid.uuid4().hex


def valid_job_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)


def _dec(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class JobQueue:
    """The store (submit / read / follow) and this process's worker loop."""

    def __init__(self, state: ServerState, redis: RedisState) -> None:
        self.state = state
        self.redis = redis
        self.cfg = state.settings.jobs
        self.ttl_ms = int(self.cfg.ttl_s * 1000)
        self.queue = redis.key("jobs", "queue")
        self.active = redis.key("jobs", "active")
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        c = redis.client
        self._submit, self._start, self._append = (c.register_script(x) for x in (_SUBMIT, _START, _APPEND))
        self._finish, self._heartbeat, self._release = (c.register_script(x) for x in (_FINISH, _HEARTBEAT, _RELEASE))
        self._group_ready = False
        self._taking = False
        self._loop: asyncio.Task | None = None
        self._running: dict[str, asyncio.Task] = {}
        self._last_backlog = 0.0

    def hash_key(self, job_id: str) -> str:
        return self.redis.key("job", job_id)

    def events_key(self, job_id: str) -> str:
        return self.redis.key("job", job_id, "events")

    def input_key(self, job_id: str, role: str) -> str:
        return self.redis.key("job", job_id, role)

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return

        async def create(c: Any) -> None:
            try:
                await c.xgroup_create(self.queue, GROUP, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

        await self.redis.run("jobs", create)
        self._group_ready = True

    # -- the store ---------------------------------------------------------------------------------------------
    def check_callback(self, url: str | None) -> str:
        """'' when none; the URL when its host is one the operator allowed; InvalidField otherwise."""
        if not url:
            return ""
        allowed = {h.lower() for h in self.cfg.webhook_allowed_hosts}
        if not allowed:
            raise InvalidField("callback_url: webhooks are disabled on this server (jobs.webhook_allowed_hosts)")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise InvalidField("callback_url must be an http(s) URL") from None
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host or parts.username or parts.password or len(url) > 2048:
            raise InvalidField("callback_url must be an http(s) URL without credentials")
        if host not in allowed and f"{host}:{port}" not in allowed:
            raise InvalidField("callback_url: host not in the server's allowed webhook hosts")
        return url

    async def submit(
        self,
        owner: str,
        video: bytes | None,
        audio: bytes | None,
        opts: AnalyzeOptions,
        idempotency_key: str | None,
        callback_url: str,
    ) -> tuple[str, bool]:
        """Store the uploads and queue the job: (job id, created). The same Idempotency-Key and request as an
        earlier job gives that job back (created False); the same key with another request is a 409."""
        from server.result_cache import cache_key

        await self._ensure_group()
        options = opts.model_dump(mode="json", exclude={"stream"})
        request_hash = await asyncio.to_thread(cache_key, video, audio, {**options, "callback_url": callback_url})
        idem = self.redis.key("idem", owner or "-", hashlib.sha256((idempotency_key or "").encode()).hexdigest())
        if idempotency_key:
            prev = await self.redis.run("jobs", lambda c: c.get(idem))
            if prev is not None:
                return self._same_request(_dec(prev), request_hash), False
        job_id = new_job_id()
        uploads = {self.input_key(job_id, r): b for r, b in (("video", video), ("audio", audio)) if b is not None}

        async def store(c: Any) -> None:
            async with c.pipeline(transaction=False) as p:
                for k, b in uploads.items():
                    p.set(k, b, px=self.ttl_ms)
                await p.execute()

        await self.redis.run("jobs", store, slow=True)
        keys = [self.hash_key(job_id), self.active, self.queue, idem]
        args = [
            job_id,
            owner,
            time.time(),
            self.ttl_ms,
            self.cfg.max_backlog,
            json.dumps(options),
            callback_url,
            f"{job_id} {request_hash}",
            "1" if idempotency_key else "0",
        ]
        verdict, prev = await self.redis.run("jobs", lambda c: self._submit(keys=keys, args=args, client=c))
        verdict = _dec(verdict)
        if verdict != "ok":
            if uploads:
                with contextlib.suppress(RedisUnavailable):
                    await self.redis.run("jobs", lambda c: c.delete(*uploads))
            if verdict == "full":
                raise Overloaded(f"the job backlog is full ({self.cfg.max_backlog}); retry later", 5.0)
            return self._same_request(_dec(prev), request_hash), False
        self.state.metrics.jobs_total.labels(event="submitted").inc()
        return job_id, True

    @staticmethod
    def _same_request(stored: str, request_hash: str) -> str:
        job_id, _, h = stored.partition(" ")
        if h != request_hash:
            raise IdempotencyConflict("this Idempotency-Key was used with a different request")
        return job_id

    async def read(self, owner: str, job_id: str) -> dict[str, Any] | None:
        """The job's status as the API shows it, or None when it does not exist for this owner."""
        if not valid_job_id(job_id):
            return None
        raw = await self.redis.run("jobs", lambda c: c.hgetall(self.hash_key(job_id)))
        h = {_dec(k): _dec(v) for k, v in raw.items()}
        if not h or h.get("owner", "") != owner:  # someone else's job looks exactly like no job
            return None
        out: dict[str, Any] = {
            "id": job_id,
            "status": h["status"],
            "attempts": int(h.get("attempts", 0)),
            "created_at": float(h["created_at"]),
            "updated_at": float(h["updated_at"]),
        }
        for field in ("answer", "error"):
            if h.get(field):
                out[field] = json.loads(h[field])
        return out

    async def follow(self, job_id: str) -> Any:
        """The job's events from the first, then live ones as they are written, until done or error."""
        last = "0-0"
        key = self.events_key(job_id)
        while True:
            try:
                got = await self.redis.run(
                    "jobs", lambda c, after=last: c.xread({key: after}, count=100, block=BLOCK_MS), slow=True
                )
            except RedisUnavailable as e:
                yield {"type": "error", "error": {"type": e.type, "message": e.message}}
                return
            if not got:
                exists = await self._exists(job_id)
                if not exists:
                    yield {"type": "error", "error": {"type": "not_found", "message": "the job expired"}}
                    return
                continue
            for entry_id, fields in got[0][1]:
                last = _dec(entry_id)
                ev = json.loads(fields[b"e"])
                yield ev
                if ev.get("type") in ("done", "error"):
                    return

    async def _exists(self, job_id: str) -> bool:
        try:
            return bool(await self.redis.run("jobs", lambda c: c.exists(self.hash_key(job_id))))
        except RedisUnavailable:
            return True  # cannot tell: keep following, the next read reports the outage

    # -- the worker --------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.cfg.concurrency <= 0:
            return
        self._taking = True
        self._loop = asyncio.get_running_loop().create_task(self._work(), name="xemo-jobs")

    def stop_taking(self) -> None:
        self._taking = False

    async def stop(self) -> None:
        """Stop taking jobs; jobs still running are given back to the queue for another process."""
        self._taking = False
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(BaseException):
                await self._loop
        tasks = list(self._running.values())
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    def _has_capacity(self) -> bool:
        s = self.state
        return (
            self._taking
            and s.ready
            and not s.draining
            and not s.admission.saturated
            and len(self._running) < self.cfg.concurrency
        )

    async def _work(self) -> None:
        last_claim = 0.0
        while True:
            try:
                await self._update_backlog()
                if not self._has_capacity():
                    await asyncio.sleep(0.2)
                    continue
                await self._ensure_group()
                entries: list[Any] = []
                if time.monotonic() - last_claim > min(5.0, self.cfg.claim_idle_s / 3):
                    last_claim = time.monotonic()
                    entries = await self._reclaim()
                if not entries:
                    got = await self.redis.run(
                        "jobs",
                        lambda c: c.xreadgroup(GROUP, self.consumer, {self.queue: ">"}, count=1, block=BLOCK_MS),
                        slow=True,
                    )
                    entries = got[0][1] if got else []
                for entry_id, fields in entries:
                    entry, job_id = _dec(entry_id), _dec(fields[b"id"])
                    if entry in self._running:  # our own job, its heartbeat late (a starved loop): still ours
                        continue
                    self._running[entry] = asyncio.get_running_loop().create_task(
                        self._run(entry, job_id), name=f"xemo-job-{job_id}"
                    )
            except RedisUnavailable as e:
                if "NOGROUP" in e.message:  # Redis restarted empty: the group has to be made again
                    self._group_ready = False
                await asyncio.sleep(self.redis.cfg.retry_interval_s)
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive any one bad entry
                log.exception("job loop error")
                await asyncio.sleep(1.0)

    async def _reclaim(self) -> list[Any]:
        idle_ms = int(self.cfg.claim_idle_s * 1000)
        res = await self.redis.run(
            "jobs", lambda c: c.xautoclaim(self.queue, GROUP, self.consumer, idle_ms, "0-0", count=1)
        )
        claimed = [e for e in res[1] if e[1]]  # entries deleted from the stream come back with no fields
        for entry_id, _ in (e for e in res[1] if not e[1]):
            await self._ack(_dec(entry_id))
        if claimed:
            log.warning("taking over a job whose process stopped", extra={"entry": _dec(claimed[0][0])})
        return claimed

    async def _update_backlog(self) -> None:
        if time.monotonic() - self._last_backlog < 2.0:
            return
        self._last_backlog = time.monotonic()

        async def count(c: Any) -> tuple[int, int]:
            async with c.pipeline(transaction=False) as p:
                p.zremrangebyscore(self.active, "-inf", time.time() - self.cfg.ttl_s)
                p.zcard(self.active)
                p.xpending(self.queue, GROUP)
                _, active, pending = await p.execute()
            return int(active), int(pending["pending"]) if isinstance(pending, dict) else 0

        with contextlib.suppress(RedisUnavailable):
            active, running = await self.redis.run("jobs", count)
            m = self.state.metrics.jobs_backlog
            m.labels(state="running").set(min(running, active))
            m.labels(state="queued").set(max(0, active - running))

    async def _ack(self, entry: str) -> None:
        async def ack(c: Any) -> None:
            async with c.pipeline(transaction=False) as p:
                p.xack(self.queue, GROUP, entry)
                p.xdel(self.queue, entry)
                await p.execute()

        with contextlib.suppress(RedisUnavailable):  # an entry left pending is reclaimed and acked later
            await self.redis.run("jobs", ack)

    async def _run(self, entry: str, job_id: str) -> None:
        from server.jobs import Job

        m = self.state.metrics
        hk, ek = self.hash_key(job_id), self.events_key(job_id)
        lost = {
            "type": "job_lost",
            "message": f"the job was started {self.cfg.max_attempts} times and the process "
            "running it stopped each time",
        }
        lost_ev = json.dumps({"type": "error", "error": {**lost, "request_id": job_id}})
        heartbeat: asyncio.Task | None = None
        try:
            args = [self.consumer, time.time(), self.cfg.max_attempts, self.ttl_ms, job_id, lost_ev, json.dumps(lost)]
            verdict, attempt = await self.redis.run(
                "jobs", lambda c: self._start(keys=[hk, ek, self.active], args=args, client=c)
            )
            verdict = _dec(verdict)
            if verdict != "run":
                if verdict == "exhausted":
                    m.jobs_total.labels(event="failed").inc()
                    log.error("job failed: its process stopped on every attempt", extra={"job_id": job_id})
                await self._ack(entry)
                return
            m.jobs_total.labels(event="started").inc()
            if int(attempt) > 1:
                m.jobs_total.labels(event="taken_over").inc()
            heartbeat = asyncio.get_running_loop().create_task(self._beat(hk, entry))
            raw = await self.redis.run("jobs", lambda c: c.hgetall(hk))
            h = {_dec(k): _dec(v) for k, v in raw.items()}
            inputs = await self.redis.run(
                "jobs", lambda c: c.mget(self.input_key(job_id, "video"), self.input_key(job_id, "audio")), slow=True
            )
            finished = await self._analyze(Job, job_id, h, inputs[0], inputs[1], heartbeat)
            if finished:
                await self._ack(entry)
                if h.get("callback_url"):
                    self.state.spawn(self._deliver(h["owner"], job_id, h["callback_url"]), "job-webhook")
        except asyncio.CancelledError:  # shutting down: hand the job back at once rather than wait for a reclaim
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._give_back(hk, entry, job_id))
            raise
        except _GiveBack:
            await self._give_back(hk, entry, job_id)
        except RedisUnavailable:
            pass  # the entry stays pending: this process (or another) takes it over once Redis answers again
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            self._running.pop(entry, None)

    async def _analyze(
        self,
        job_cls: Any,
        job_id: str,
        h: dict[str, str],
        video: bytes | None,
        audio: bytes | None,
        heartbeat: asyncio.Task,
    ) -> bool:
        """Run the analysis as a `server.jobs.Job`; its events go to the job's stream. True once it ended here."""
        job = job_cls(self.state, job_id, time.perf_counter(), "job")
        job.key_id = h.get("owner") or None
        opts = AnalyzeOptions.model_validate(json.loads(h.get("options") or "{}"))
        hk, ek = self.hash_key(job_id), self.events_key(job_id)
        final: dict[str, Any] | None = None
        try:
            while True:  # capacity was free when the job was read; if HTTP took it meanwhile, wait for it
                try:
                    job.admit()
                    break
                except Overloaded:
                    if not self._taking:
                        raise _GiveBack() from None
                    await asyncio.sleep(0.2)
            await job.prepare(video, audio, opts)
            async with contextlib.aclosing(job.events()) as events:
                async for ev in events:
                    if heartbeat.done():  # lost ownership: another process runs this job now
                        return False
                    if ev["type"] in ("done", "error"):
                        final = ev
                        break
                    body = json.dumps(ev, separators=(",", ":"))
                    ok = await self.redis.run(
                        "jobs", lambda c, b=body: self._append(keys=[hk, ek], args=[self.consumer, b], client=c)
                    )
                    if not ok:
                        return False
        except (asyncio.CancelledError, RedisUnavailable, _GiveBack):
            job.finish("cancelled")
            raise
        except Exception as e:
            final = {"type": "error", **job.fail(e).body(job_id)}
        if final is None:
            final = {"type": "error", **job.fail(RuntimeError("no answer")).body(job_id)}
        if final["type"] == "done":
            status, field, value = "done", "answer", final["answer"]
        else:
            err = final["error"]
            status, field, value = "failed", "error", {"type": err["type"], "message": err["message"]}
        args = [
            self.consumer,
            status,
            field,
            json.dumps(value),
            json.dumps(final, separators=(",", ":")),
            time.time(),
            self.ttl_ms,
            job_id,
        ]
        keys = [hk, ek, self.active, self.input_key(job_id, "video"), self.input_key(job_id, "audio")]
        ok = await self.redis.run("jobs", lambda c: self._finish(keys=keys, args=args, client=c))
        if ok:
            self.state.metrics.jobs_total.labels(event=status).inc()
        return bool(ok)

    async def _beat(self, hk: str, entry: str) -> None:
        """Keep the entry's idle time low while this process owns the job; returns when it no longer does."""
        period = self.cfg.claim_idle_s / 3
        while True:
            await asyncio.sleep(period)
            try:
                owned = await self.redis.run(
                    "jobs",
                    lambda c: self._heartbeat(keys=[hk, self.queue], args=[self.consumer, GROUP, entry], client=c),
                )
            except RedisUnavailable:
                continue
            if not owned:
                return

    async def _give_back(self, hk: str, entry: str, job_id: str) -> None:
        args = [self.consumer, GROUP, entry, job_id, time.time()]
        with contextlib.suppress(RedisUnavailable):
            await self.redis.run("jobs", lambda c: self._release(keys=[hk, self.queue], args=args, client=c))

    async def _deliver(self, owner: str, job_id: str, url: str) -> None:
        """POST the final status to the job's callback_url (an allowed host, checked again now); 3 tries."""
        try:
            self.check_callback(url)
            body = await self.read(owner, job_id)
        except (InvalidField, RedisUnavailable):
            return
        async with httpx.AsyncClient(timeout=self.cfg.webhook_timeout_s, follow_redirects=False) as client:
            for attempt in range(3):
                try:
                    r = await client.post(url, json=body)
                    if r.status_code < 500:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(2.0**attempt)
        log.warning("webhook not delivered", extra={"job_id": job_id})


def build_job_queue(state: ServerState) -> JobQueue | None:
    """Async jobs need Redis: None (and no /v1/jobs routes) without `redis_url` or with `jobs.enabled` off."""
    if state.redis is None or not state.settings.jobs.enabled:
        return None
    return JobQueue(state, state.redis)
