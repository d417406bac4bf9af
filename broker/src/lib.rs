//! The Redis broker: queues, leases and dead letters for stage tasks, which
//! the scheduler enqueues, workers lease and the CLI inspects.
//!
//! At-least-once delivery with leases. A worker leases a task, renews the
//! lease by heartbeat while the stage runs, and completes it with the lease's
//! fencing token; a completion with a stale token is refused. Expired leases
//! are redelivered by the scheduler's reaper. Failures retry with exponential
//! backoff up to `max_attempts`, then go to the dead-letter set with their
//! last error. Every operation is one Lua script, so each is atomic, and each
//! touches only keys it names: nothing scans the keyspace.
//!
//! Redis may lose everything: the store stays the source of truth, and the
//! scheduler rebuilds queues from it (see `ARCHITECTURE.md` for the key
//! layout and the memory per task).
//!
//! Key layout (prefix `sl` by default):
//!
//! ```text
//! sl:epoch                 STRING  set once per Redis life; gone after a flush or a restart without persistence
//! sl:seq                   STRING  fencing-token counter
//! sl:task:<stage id>       HASH    queue, sweep, score, state, attempts, max_attempts,
//!                                  token, worker, error, cancelled
//! sl:body:<stage id>       STRING  the task body (msgpack); exists exactly while the task does
//! sl:queue:<class>         ZSET    stage ids ready to lease, by score: -priority·1e13 + the ms it
//!                                  was first queued, so the oldest age of each priority is readable
//! sl:leases                ZSET    leased stage ids by lease expiry (ms)
//! sl:retry                 ZSET    failed stage ids by the time their backoff ends (ms)
//! sl:dead                  ZSET    dead-lettered stage ids by the time they died (ms)
//! sl:events                LIST    completed stage ids, for the scheduler to advance DAGs
//! sl:sweeps                SET     active sweep ids
//! sl:sweep:<id>            HASH    name, priority, state, submitted_ms
//! sl:sweep:<id>:tasks      SET     stage ids this sweep enqueued (for cancel)
//! sl:workers               HASH    worker id → JSON (queues, stage it runs, last heartbeat)
//! sl:leader                STRING  the scheduler holding leadership, with a TTL
//! ```

mod connect;
mod scripts;
mod task;

use connect::{unreachable, with_password};

pub use task::{decode_body, encode_body, TaskBody, BODY_VERSION};

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use deadpool_redis::redis::{self, AsyncCommands};
use deadpool_redis::{Config, Pool, Runtime};
use serde::{Deserialize, Serialize};
use subliminal_shared::stage::StageId;

/// Resource classes a worker can serve; a stage goes to one of them.
pub use subliminal_shared::stage::Queue;

pub const QUEUES: &[&str] = &[Queue::Gpu.as_str(), Queue::Cpu.as_str()];

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A connection pool and the key prefix.
#[derive(Clone)]
pub struct Broker {
    pool: Pool,
    prefix: String,
}

/// A task to enqueue whose body is already encoded ([`encode_body`]).
#[derive(Debug, Clone, Copy)]
pub struct EncodedTask<'a> {
    pub stage: StageId,
    pub queue: &'a str,
    pub sweep: &'a str,
    pub priority: i64,
    pub body: &'a [u8],
}

/// A task handed to a worker: the body, and the token that proves the lease.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The stage id as queued (a malformed task may not even have a valid one).
    pub stage: String,
    /// The raw body; [`decode_body`] may refuse it.
    pub body: Vec<u8>,
    pub token: i64,
    pub attempt: i64,
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// Another worker holds it now, or Redis lost it.
    Lost,
    /// Its sweep was cancelled: stop.
    Cancelled,
}

/// Where a failed task went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    WillRetry,
    Dead,
    /// Its sweep was cancelled: the task is gone, not dead-lettered.
    Dropped,
    /// The lease was no longer ours: nothing changed.
    Refused,
}

/// A dead-lettered task, for `subliminal dlq list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadTask {
    pub stage: String,
    pub kind: String,
    pub sweep: String,
    pub attempts: i64,
    pub error: String,
    pub died_ms: i64,
}

/// The state of one task, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Queued,
    Leased,
    Retry,
    Dead,
}

/// How long [`Broker::connect`] retries a refused or reset connection.
pub const CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

impl Broker {
    /// Connects to `url` (`redis://` or `rediss://` for TLS; a user name and
    /// password go in the URL, or the password in REDIS_PASSWORD) and checks that Redis answers PING. A
    /// refused or reset connection (a server still starting) is retried with
    /// backoff for up to [`CONNECT_PATIENCE`]; then, or on any other error (a
    /// wrong password, a bad URL), it fails saying what it tried.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let url = with_password(url, std::env::var("REDIS_PASSWORD").ok().as_deref());
        let mut config = Config::from_url(url);
        // Enough for a worker's lease loop and heartbeat, or a benchmark's consumers.
        config.pool = Some(deadpool_redis::PoolConfig::new(64));
        let invalid =
            "invalid Redis URL: expected redis://[:password@]host:port[/db] or rediss://...";
        let pool = config
            .builder()
            .context(invalid)?
            .runtime(Runtime::Tokio1)
            .post_create(deadpool_redis::Hook::sync_fn(|_, _| {
                subliminal_shared::metrics::metrics()
                    .redis_connections
                    .inc();
                Ok(())
            }))
            .build()
            .context(invalid)?;
        let broker = Self {
            pool,
            prefix: prefix.to_owned(),
        };
        let started = std::time::Instant::now();
        let mut wait = std::time::Duration::from_millis(50);
        let mut tries = 0;
        loop {
            tries += 1;
            match broker.ping().await {
                Ok(()) => return Ok(broker),
                Err(e) if unreachable(&e) && started.elapsed() + wait < CONNECT_PATIENCE => {
                    tracing::debug!("Redis not reachable yet ({e:#}); retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(1));
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "tried {tries} time(s) over {:.1}s; check that Redis runs there and the URL and password are right",
                        started.elapsed().as_secs_f64()
                    )))
                }
            }
        }
    }

    /// Connects, waiting with backoff (logged) while Redis is unreachable:
    /// a daemon started before Redis, or during an outage, waits for it.
    pub async fn connect_patiently(url: &str, prefix: &str) -> Self {
        let mut wait = std::time::Duration::from_millis(200);
        loop {
            match Self::connect(url, prefix).await {
                Ok(b) => return b,
                Err(e) => {
                    tracing::warn!("cannot reach Redis: {e:#}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(10));
                }
            }
        }
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.conn().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .context("Redis does not answer PING")?;
        Ok(())
    }

    async fn conn(&self) -> anyhow::Result<deadpool_redis::Connection> {
        self.pool.get().await.map_err(|e| {
            subliminal_shared::metrics::metrics().redis_errors.inc();
            anyhow::Error::new(e).context("cannot reach Redis")
        })
    }

    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// Whether this Redis life is marked: false for a new or flushed Redis,
    /// which tells the scheduler to rebuild from the store before it marks it.
    pub async fn has_epoch(&self) -> anyhow::Result<bool> {
        let mut conn = self.conn().await?;
        let n: i64 = redis::cmd("EXISTS")
            .arg(self.key(&["epoch"]))
            .query_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Marks this Redis life, once its state is rebuilt: a scheduler that
    /// dies mid-rebuild leaves it unmarked, and the next leader rebuilds.
    pub async fn mark_epoch(&self) -> anyhow::Result<()> {
        let mut conn = self.conn().await?;
        redis::cmd("SET")
            .arg(self.key(&["epoch"]))
            .arg(now_ms())
            .arg("NX")
            .query_async::<Option<String>>(&mut conn)
            .await?;
        Ok(())
    }

    /// Adds a task unless one for this stage exists (queued, leased, retrying or dead).
    pub async fn enqueue(&self, body: &TaskBody, max_attempts: u32) -> anyhow::Result<bool> {
        let mut conn = self.conn().await?;
        let score = (-(body.priority as f64)) * 1e13 + now_ms() as f64;
        let added: i64 = scripts::ENQUEUE
            .arg(&self.prefix)
            .arg(body.stage.id.to_string())
            .arg(encode_body(body)?)
            .arg(&body.queue)
            .arg(&body.sweep)
            .arg(score)
            .arg(max_attempts)
            .invoke_async(&mut conn)
            .await?;
        Ok(added == 1)
    }

    /// Adds many tasks in one round trip (a pipeline); returns, per body,
    /// whether its task was new (false: one for that stage existed).
    pub async fn enqueue_many(
        &self,
        bodies: &[TaskBody],
        max_attempts: u32,
    ) -> anyhow::Result<Vec<bool>> {
        let encoded = bodies
            .iter()
            .map(|b| encode_body(b).map(|bytes| (b, bytes)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tasks: Vec<EncodedTask> = encoded
            .iter()
            .map(|(b, bytes)| EncodedTask {
                stage: b.stage.id,
                queue: &b.queue,
                sweep: &b.sweep,
                priority: b.priority,
                body: bytes,
            })
            .collect();
        self.enqueue_encoded(&tasks, max_attempts).await
    }

    /// [`Broker::enqueue_many`] for bodies already encoded (the scheduler
    /// holds its stages that way).
    pub async fn enqueue_encoded(
        &self,
        tasks: &[EncodedTask<'_>],
        max_attempts: u32,
    ) -> anyhow::Result<Vec<bool>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        // Loading is idempotent and makes EVALSHA safe after a Redis restart.
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(scripts::ENQUEUE_SOURCE)
            .query_async(&mut conn)
            .await?;
        let now = now_ms() as f64;
        let mut pipe = redis::pipe();
        for task in tasks {
            pipe.cmd("EVALSHA")
                .arg(&sha)
                .arg(0)
                .arg(&self.prefix)
                .arg(task.stage.to_string())
                .arg(task.body)
                .arg(task.queue)
                .arg(task.sweep)
                .arg((-(task.priority as f64)) * 1e13 + now)
                .arg(max_attempts);
        }
        let added: Vec<i64> = pipe.query_async(&mut conn).await?;
        Ok(added.iter().map(|a| *a == 1).collect())
    }

    /// Puts raw bytes in a queue as a task body: for tests of malformed bodies.
    pub async fn enqueue_raw(&self, stage: &str, queue: &str, body: &[u8]) -> anyhow::Result<()> {
        let mut conn = self.conn().await?;
        let _: i64 = scripts::ENQUEUE
            .arg(&self.prefix)
            .arg(stage)
            .arg(body)
            .arg(queue)
            .arg("-")
            .arg(now_ms())
            .arg(1)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Leases the next task from the first non-empty queue of `queues`.
    pub async fn lease(
        &self,
        queues: &[String],
        worker: &str,
        lease_ms: i64,
    ) -> anyhow::Result<Option<Lease>> {
        Ok(self.lease_many(queues, worker, lease_ms, 1).await?.pop())
    }

    /// Leases up to `max` tasks in one round trip (prefetch, for short tasks).
    pub async fn lease_many(
        &self,
        queues: &[String],
        worker: &str,
        lease_ms: i64,
        max: usize,
    ) -> anyhow::Result<Vec<Lease>> {
        let mut conn = self.conn().await?;
        let mut invocation = scripts::LEASE.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(lease_ms)
            .arg(worker)
            .arg(max.max(1));
        for q in queues {
            invocation.arg(q);
        }
        let flat: Vec<redis::Value> = invocation.invoke_async(&mut conn).await?;
        let mut leases = Vec::with_capacity(flat.len() / 4);
        for chunk in flat.chunks_exact(4) {
            leases.push(Lease {
                stage: redis::from_redis_value_ref(&chunk[0])?,
                body: redis::from_redis_value_ref(&chunk[1])?,
                token: redis::from_redis_value_ref(&chunk[2])?,
                attempt: redis::from_redis_value_ref(&chunk[3])?,
            });
        }
        Ok(leases)
    }

    pub async fn renew(&self, lease: &Lease, lease_ms: i64) -> anyhow::Result<Renewal> {
        let mut conn = self.conn().await?;
        let r: i64 = self
            .on_lease(&scripts::RENEW, lease)
            .arg(now_ms() + lease_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(match r {
            1 => Renewal::Renewed,
            -1 => Renewal::Cancelled,
            _ => Renewal::Lost,
        })
    }

    /// `script` with the arguments every lease operation starts with: the
    /// key prefix, the stage and the lease's token.
    fn on_lease<'a>(
        &self,
        script: &'a redis::Script,
        lease: &Lease,
    ) -> redis::ScriptInvocation<'a> {
        let mut call = script.prepare_invoke();
        call.arg(&self.prefix).arg(&lease.stage).arg(lease.token);
        call
    }

    /// Acknowledges a finished task; false when the lease was no longer ours.
    pub async fn complete(&self, lease: &Lease) -> anyhow::Result<bool> {
        let mut conn = self.conn().await?;
        let r: i64 = self
            .on_lease(&scripts::COMPLETE, lease)
            .invoke_async(&mut conn)
            .await?;
        Ok(r == 1)
    }

    /// Acknowledges many tasks in one round trip (a pipeline); returns, per
    /// lease, whether it was accepted.
    pub async fn complete_many(&self, leases: &[Lease]) -> anyhow::Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(scripts::COMPLETE_SOURCE)
            .query_async(&mut conn)
            .await?;
        let mut pipe = redis::pipe();
        for lease in leases {
            pipe.cmd("EVALSHA")
                .arg(&sha)
                .arg(0)
                .arg(&self.prefix)
                .arg(&lease.stage)
                .arg(lease.token);
        }
        let done: Vec<i64> = pipe.query_async(&mut conn).await?;
        Ok(done.into_iter().map(|d| d == 1).collect())
    }

    /// Records a failure: retried after a backoff, or dead-lettered when out
    /// of attempts (or at once when `permanent`, e.g. a malformed body).
    pub async fn fail(
        &self,
        lease: &Lease,
        error: &str,
        backoff_ms: i64,
        permanent: bool,
    ) -> anyhow::Result<Failed> {
        let mut conn = self.conn().await?;
        let r: i64 = self
            .on_lease(&scripts::FAIL, lease)
            .arg(now_ms())
            .arg(error)
            .arg(backoff_ms)
            .arg(permanent as i64)
            .invoke_async(&mut conn)
            .await?;
        Ok(match r {
            1 => Failed::WillRetry,
            2 => Failed::Dead,
            3 => Failed::Dropped,
            _ => Failed::Refused,
        })
    }

    /// Gives a leased task back without counting an attempt (worker shutdown).
    pub async fn release(&self, lease: &Lease) -> anyhow::Result<bool> {
        let mut conn = self.conn().await?;
        let r: i64 = self
            .on_lease(&scripts::RELEASE, lease)
            .invoke_async(&mut conn)
            .await?;
        Ok(r == 1)
    }

    /// Redelivers up to `limit` expired leases; returns the stage ids
    /// (redelivered, dead-lettered), so that each can be logged by name.
    pub async fn reap(&self, limit: usize) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let mut conn = self.conn().await?;
        Ok(scripts::REAP
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(limit)
            .invoke_async(&mut conn)
            .await?)
    }

    /// Moves up to `limit` tasks whose backoff has ended back to their queue.
    pub async fn promote(&self, limit: usize) -> anyhow::Result<i64> {
        let mut conn = self.conn().await?;
        Ok(scripts::PROMOTE
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(limit)
            .invoke_async(&mut conn)
            .await?)
    }

    /// Takes up to `max` completed stage ids off the event list.
    pub async fn completions(&self, max: usize) -> anyhow::Result<Vec<StageId>> {
        let mut conn = self.conn().await?;
        let ids: Option<Vec<String>> = redis::cmd("LPOP")
            .arg(self.key(&["events"]))
            .arg(max)
            .query_async(&mut conn)
            .await?;
        Ok(ids
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect())
    }

    /// States of the given stages' tasks (absent: no task).
    pub async fn task_states(&self, ids: &[StageId]) -> anyhow::Result<Vec<Option<TaskState>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.key(&["task", &id.to_string()]), "state");
        }
        let states: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        Ok(states
            .into_iter()
            .map(|s| match s.as_deref() {
                Some("queued") => Some(TaskState::Queued),
                Some("leased") => Some(TaskState::Leased),
                Some("retry") => Some(TaskState::Retry),
                Some("dead") => Some(TaskState::Dead),
                _ => None,
            })
            .collect())
    }

    /// The last error of the given stages' tasks, where there is one.
    pub async fn task_errors(&self, ids: &[StageId]) -> anyhow::Result<Vec<Option<String>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.key(&["task", &id.to_string()]), "error");
        }
        Ok(pipe.query_async(&mut conn).await?)
    }

    pub async fn register_sweep(&self, sweep: &str, priority: i64) -> anyhow::Result<()> {
        let mut conn = self.conn().await?;
        let _: () = redis::pipe()
            .hset_multiple(
                self.key(&["sweep", sweep]),
                &[
                    ("priority", priority.to_string()),
                    ("state", "active".to_owned()),
                    ("submitted_ms", now_ms().to_string()),
                ],
            )
            .sadd(self.key(&["sweeps"]), sweep)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    pub async fn active_sweeps(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> = conn.smembers(self.key(&["sweeps"])).await?;
        let mut out = Vec::new();
        for id in ids {
            let priority: Option<i64> = conn.hget(self.key(&["sweep", &id]), "priority").await?;
            out.push((id, priority.unwrap_or(0)));
        }
        Ok(out)
    }

    pub async fn finish_sweep(&self, sweep: &str, state: &str) -> anyhow::Result<()> {
        let mut conn = self.conn().await?;
        let _: () = redis::pipe()
            .hset(self.key(&["sweep", sweep]), "state", state)
            .srem(self.key(&["sweeps"]), sweep)
            .del(self.key(&["sweep", sweep, "tasks"]))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    pub async fn sweep_state(&self, sweep: &str) -> anyhow::Result<Option<String>> {
        let mut conn = self.conn().await?;
        Ok(conn.hget(self.key(&["sweep", sweep]), "state").await?)
    }

    /// Cancels a sweep: its queued tasks are dropped, its running tasks are
    /// flagged so that their next heartbeat stops them. Returns (dropped, flagged).
    pub async fn cancel_sweep(&self, sweep: &str) -> anyhow::Result<(i64, i64)> {
        let mut conn = self.conn().await?;
        let counts: (i64, i64) = scripts::CANCEL
            .arg(&self.prefix)
            .arg(sweep)
            .invoke_async(&mut conn)
            .await?;
        Ok(counts)
    }

    pub async fn dead_letters(&self) -> anyhow::Result<Vec<DeadTask>> {
        let mut conn = self.conn().await?;
        let ids: Vec<(String, f64)> = conn.zrange_withscores(self.key(&["dead"]), 0, -1).await?;
        let mut out = Vec::new();
        for (id, died) in ids {
            let task = self.key(&["task", &id]);
            let fields: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(&task)
                .arg(&["sweep", "attempts", "error"])
                .query_async(&mut conn)
                .await?;
            let body: Option<Vec<u8>> = conn.get(self.key(&["body", &id])).await?;
            let kind = match body.as_deref().map(decode_body) {
                Some(Ok(b)) => b.stage.kind.to_string(),
                Some(Err(_)) => "(malformed)".to_owned(),
                None => String::new(),
            };
            out.push(DeadTask {
                stage: id,
                kind,
                sweep: fields[0].clone().unwrap_or_default(),
                attempts: fields[1]
                    .as_deref()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0),
                error: fields[2].clone().unwrap_or_default(),
                died_ms: died as i64,
            });
        }
        Ok(out)
    }

    /// Puts dead-lettered tasks back in their queues with fresh attempts.
    pub async fn requeue_dead(&self, ids: &[String]) -> anyhow::Result<i64> {
        let mut conn = self.conn().await?;
        let mut n = 0;
        for id in ids {
            let moved: i64 = scripts::REQUEUE
                .arg(&self.prefix)
                .arg(id)
                .invoke_async(&mut conn)
                .await?;
            n += moved;
        }
        Ok(n)
    }

    /// Counts for `status`: (queued per queue, leased, retrying, dead).
    pub async fn counts(&self) -> anyhow::Result<(Vec<(String, i64)>, i64, i64, i64)> {
        let mut conn = self.conn().await?;
        let mut queued = Vec::new();
        for q in QUEUES {
            let n: i64 = conn.zcard(self.key(&["queue", q])).await?;
            queued.push((q.to_string(), n));
        }
        let leased: i64 = conn.zcard(self.key(&["leases"])).await?;
        let retry: i64 = conn.zcard(self.key(&["retry"])).await?;
        let dead: i64 = conn.zcard(self.key(&["dead"])).await?;
        Ok((queued, leased, retry, dead))
    }

    /// Seconds the oldest task of each queue has waited since it was first
    /// queued (0 for an empty queue), among tasks of `priorities` (the
    /// active sweeps' ones).
    pub async fn oldest_ages(&self, priorities: &[i64]) -> anyhow::Result<Vec<(String, f64)>> {
        let mut conn = self.conn().await?;
        let now = now_ms() as f64;
        let mut out = Vec::new();
        for q in QUEUES {
            let mut age: f64 = 0.0;
            // A score is -priority·1e13 + ms, and ms < 1e13: each priority has
            // its own band, and the first task of a band is its oldest.
            for priority in priorities {
                let start = -(*priority as f64) * 1e13;
                let first: Vec<(String, f64)> = redis::cmd("ZRANGE")
                    .arg(self.key(&["queue", q]))
                    .arg(start)
                    .arg(format!("({}", start + 1e13))
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(1)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await?;
                if let Some((_, score)) = first.first() {
                    age = age.max((now - (score - start)) / 1000.0);
                }
            }
            out.push((q.to_string(), age.max(0.0)));
        }
        Ok(out)
    }

    /// Records a worker's heartbeat (what it serves, what it runs).
    pub async fn worker_heartbeat(
        &self,
        worker: &str,
        status: &serde_json::Value,
    ) -> anyhow::Result<()> {
        let mut conn = self.conn().await?;
        let _: () = conn
            .hset(self.key(&["workers"]), worker, status.to_string())
            .await?;
        Ok(())
    }

    pub async fn worker_gone(&self, worker: &str) -> anyhow::Result<()> {
        let mut conn = self.conn().await?;
        let _: () = conn.hdel(self.key(&["workers"]), worker).await?;
        Ok(())
    }

    pub async fn workers(&self) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
        let mut conn = self.conn().await?;
        let all: Vec<(String, String)> = conn.hgetall(self.key(&["workers"])).await?;
        Ok(all
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    serde_json::from_str(&v).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect())
    }

    /// Takes or keeps scheduler leadership for `ttl_ms`; true when we lead.
    pub async fn lead(&self, me: &str, ttl_ms: i64) -> anyhow::Result<bool> {
        let mut conn = self.conn().await?;
        let r: i64 = scripts::LEAD
            .arg(&self.prefix)
            .arg(me)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(r == 1)
    }
}
