//! The Lua scripts behind each broker operation; one script, one atomic step.
//! ARGV[1] is always the key prefix.

use std::sync::LazyLock;

use deadpool_redis::redis::Script;

/// ARGV: prefix, id, body, queue, sweep, score, max_attempts → 1 added, 0 a task exists.
/// The body has a key of its own: in the hash it would push the hash out of
/// Redis's compact encoding (values over 64 bytes), which costs 250 bytes a task.
pub static ENQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(ENQUEUE_SOURCE));

pub const ENQUEUE_SOURCE: &str = r#"
local p, id = ARGV[1], ARGV[2]
local t = p .. ':task:' .. id
if redis.call('EXISTS', t) == 1 then return 0 end
redis.call('SET', p .. ':body:' .. id, ARGV[3])
redis.call('HSET', t, 'queue', ARGV[4], 'sweep', ARGV[5], 'score', ARGV[6],
  'state', 'queued', 'attempts', 0, 'max_attempts', ARGV[7])
redis.call('ZADD', p .. ':queue:' .. ARGV[4], ARGV[6], id)
if ARGV[5] ~= '-' then redis.call('SADD', p .. ':sweep:' .. ARGV[5] .. ':tasks', id) end
return 1
"#;

/// ARGV: prefix, now, lease_ms, worker, max, queue... → up to `max` tasks,
/// flattened as {id, body, token, attempt, id, body, ...}.
pub static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, now, lease_ms, worker, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local out = {}
for i = 6, #ARGV do
  local q = p .. ':queue:' .. ARGV[i]
  while #out < 4 * max do
    local popped = redis.call('ZPOPMIN', q)
    if #popped == 0 then break end
    local id = popped[1]
    local t = p .. ':task:' .. id
    local body = redis.call('GET', p .. ':body:' .. id)
    if body then
      local token = redis.call('INCR', p .. ':seq')
      local attempt = redis.call('HINCRBY', t, 'attempts', 1)
      redis.call('HSET', t, 'state', 'leased', 'token', token, 'worker', worker)
      redis.call('ZADD', p .. ':leases', now + lease_ms, id)
      table.insert(out, id)
      table.insert(out, body)
      table.insert(out, token)
      table.insert(out, attempt)
    end
  end
end
return out
"#,
    )
});

/// ARGV: prefix, id, token, new expiry → 1 renewed, 0 lost, -1 cancelled.
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, id = ARGV[1], ARGV[2]
local t = p .. ':task:' .. id
if redis.call('HGET', t, 'token') ~= ARGV[3] or redis.call('HGET', t, 'state') ~= 'leased' then return 0 end
if redis.call('HGET', t, 'cancelled') == '1' then return -1 end
redis.call('ZADD', p .. ':leases', 'XX', ARGV[4], id)
return 1
"#,
    )
});

/// ARGV: prefix, id, token → 1 completed, 0 refused (the lease is not ours).
pub static COMPLETE: LazyLock<Script> = LazyLock::new(|| Script::new(COMPLETE_SOURCE));

pub const COMPLETE_SOURCE: &str = r#"
local p, id = ARGV[1], ARGV[2]
local t = p .. ':task:' .. id
local f = redis.call('HMGET', t, 'token', 'state', 'sweep')
if f[1] ~= ARGV[3] or f[2] ~= 'leased' then return 0 end
local sweep = f[3]
redis.call('ZREM', p .. ':leases', id)
redis.call('DEL', t, p .. ':body:' .. id)
if sweep then redis.call('SREM', p .. ':sweep:' .. sweep .. ':tasks', id) end
redis.call('RPUSH', p .. ':events', id)
return 1
"#;

/// ARGV: prefix, id, token, now, error, backoff_ms, permanent → 1 retry, 2 dead,
/// 3 dropped (its sweep was cancelled: not a failure, and resume must run it again), 0 refused.
pub static FAIL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, id, now = ARGV[1], ARGV[2], tonumber(ARGV[4])
local t = p .. ':task:' .. id
if redis.call('HGET', t, 'token') ~= ARGV[3] or redis.call('HGET', t, 'state') ~= 'leased' then return 0 end
redis.call('ZREM', p .. ':leases', id)
if redis.call('HGET', t, 'cancelled') == '1' then
  redis.call('DEL', t, p .. ':body:' .. id)
  return 3
end
redis.call('HSET', t, 'error', ARGV[5])
redis.call('HDEL', t, 'token', 'worker')
local attempts = tonumber(redis.call('HGET', t, 'attempts'))
local max = tonumber(redis.call('HGET', t, 'max_attempts'))
if ARGV[7] == '1' or attempts >= max then
  redis.call('HSET', t, 'state', 'dead')
  redis.call('ZADD', p .. ':dead', now, id)
  return 2
end
redis.call('HSET', t, 'state', 'retry')
redis.call('ZADD', p .. ':retry', now + tonumber(ARGV[6]) * 2 ^ (attempts - 1), id)
return 1
"#,
    )
});

/// ARGV: prefix, id, token → 1 released back to its queue, 0 refused.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, id = ARGV[1], ARGV[2]
local t = p .. ':task:' .. id
if redis.call('HGET', t, 'token') ~= ARGV[3] or redis.call('HGET', t, 'state') ~= 'leased' then return 0 end
redis.call('ZREM', p .. ':leases', id)
redis.call('HINCRBY', t, 'attempts', -1)
redis.call('HDEL', t, 'token', 'worker')
redis.call('HSET', t, 'state', 'queued')
local q = redis.call('HGET', t, 'queue')
redis.call('ZADD', p .. ':queue:' .. q, redis.call('HGET', t, 'score'), id)
return 1
"#,
    )
});

/// ARGV: prefix, now, limit → {redelivered ids, dead-lettered ids}.
pub static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, now = ARGV[1], ARGV[2]
local ids = redis.call('ZRANGEBYSCORE', p .. ':leases', '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local redelivered, dead = {}, {}
for _, id in ipairs(ids) do
  redis.call('ZREM', p .. ':leases', id)
  local t = p .. ':task:' .. id
  if redis.call('HGET', t, 'cancelled') == '1' then
    redis.call('DEL', t, p .. ':body:' .. id)
  elseif redis.call('EXISTS', t) == 1 then
    redis.call('HDEL', t, 'token', 'worker')
    redis.call('HINCRBY', t, 'redeliveries', 1)
    local attempts = tonumber(redis.call('HGET', t, 'attempts'))
    local max = tonumber(redis.call('HGET', t, 'max_attempts'))
    if attempts >= max then
      redis.call('HSET', t, 'state', 'dead', 'error', 'lease expired on the last attempt (worker lost?)')
      redis.call('ZADD', p .. ':dead', now, id)
      table.insert(dead, id)
    else
      redis.call('HSET', t, 'state', 'queued')
      local q = redis.call('HGET', t, 'queue')
      redis.call('ZADD', p .. ':queue:' .. q, redis.call('HGET', t, 'score'), id)
      table.insert(redelivered, id)
    end
  end
end
return {redelivered, dead}
"#,
    )
});

/// ARGV: prefix, now, limit → how many tasks left backoff for their queue.
pub static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, now = ARGV[1], ARGV[2]
local ids = redis.call('ZRANGEBYSCORE', p .. ':retry', '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZREM', p .. ':retry', id)
  local t = p .. ':task:' .. id
  if redis.call('EXISTS', t) == 1 then
    redis.call('HSET', t, 'state', 'queued')
    local q = redis.call('HGET', t, 'queue')
    redis.call('ZADD', p .. ':queue:' .. q, redis.call('HGET', t, 'score'), id)
  end
end
return #ids
"#,
    )
});

/// ARGV: prefix, sweep → {dropped queued tasks, flagged running tasks}.
pub static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, sweep = ARGV[1], ARGV[2]
local set = p .. ':sweep:' .. sweep .. ':tasks'
local dropped, flagged = 0, 0
for _, id in ipairs(redis.call('SMEMBERS', set)) do
  local t = p .. ':task:' .. id
  local state = redis.call('HGET', t, 'state')
  if state == 'leased' then
    redis.call('HSET', t, 'cancelled', '1')
    flagged = flagged + 1
  elseif state then
    local q = redis.call('HGET', t, 'queue')
    redis.call('ZREM', p .. ':queue:' .. q, id)
    redis.call('ZREM', p .. ':retry', id)
    redis.call('ZREM', p .. ':dead', id)
    redis.call('DEL', t, p .. ':body:' .. id)
    dropped = dropped + 1
  end
end
redis.call('DEL', set)
redis.call('HSET', p .. ':sweep:' .. sweep, 'state', 'cancelled')
redis.call('SREM', p .. ':sweeps', sweep)
return {dropped, flagged}
"#,
    )
});

/// ARGV: prefix, id → 1 when a dead task went back to its queue.
pub static REQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, id = ARGV[1], ARGV[2]
local t = p .. ':task:' .. id
if redis.call('ZREM', p .. ':dead', id) == 0 or redis.call('EXISTS', t) == 0 then return 0 end
redis.call('HSET', t, 'state', 'queued', 'attempts', 0)
redis.call('HDEL', t, 'cancelled')
local q = redis.call('HGET', t, 'queue')
redis.call('ZADD', p .. ':queue:' .. q, redis.call('HGET', t, 'score'), id)
return 1
"#,
    )
});

/// ARGV: prefix, me, ttl_ms → 1 when `me` leads (taken or renewed).
pub static LEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local k = ARGV[1] .. ':leader'
local holder = redis.call('GET', k)
if holder == false then
  redis.call('SET', k, ARGV[2], 'PX', ARGV[3])
  return 1
elseif holder == ARGV[2] then
  redis.call('PEXPIRE', k, ARGV[3])
  return 1
end
return 0
"#,
    )
});
