// The first PostgreSQL schema: the SQLite store's schema at its version 5 (tasks and their kept
// output, agents with their owner token, tokens with takeover, the audit log, nodes), in
// PostgreSQL's types: BYTEA for bytes, BOOLEAN for flags, an identity for the audit id.
// Timestamps stay BIGINT milliseconds and JSON stays TEXT, as the records carry them.
export const INITIAL = `
CREATE TABLE tasks (
  id            TEXT PRIMARY KEY,       -- UUIDv7: the primary key is also the creation order
  kind          TEXT NOT NULL,
  target        TEXT NOT NULL,          -- JSON TargetRecord
  pool          TEXT,                   -- target.pool, a column so that it can be filtered on
  spec          BYTEA NOT NULL,         -- TaskSpec protobuf
  state         TEXT NOT NULL,
  agent_id      TEXT,
  requester     TEXT NOT NULL,
  created_at    BIGINT NOT NULL,
  assigned_at   BIGINT,
  started_at    BIGINT,
  finished_at   BIGINT,
  deadline_at   BIGINT,
  exit_code     INTEGER,
  signal        TEXT,
  error_code    INTEGER,
  error_message TEXT,
  reason        TEXT,
  duration_ms   BIGINT,
  stdout_bytes  BIGINT NOT NULL DEFAULT 0,
  stderr_bytes  BIGINT NOT NULL DEFAULT 0,
  result        BYTEA
);
CREATE INDEX tasks_agent_id ON tasks (agent_id);
CREATE INDEX tasks_pool ON tasks (pool);
-- Only unfinished tasks are looked up by state (recovery after a restart).
CREATE INDEX tasks_unfinished ON tasks (state) WHERE state IN ('queued', 'assigned', 'running');

-- The kept part of each task's output: head rows are written once, tail rows are replaced as
-- the rolling tail moves. seq orders a task's rows as the output was produced.
CREATE TABLE task_output (
  task_id    TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
  seq        INTEGER NOT NULL,
  stream     TEXT NOT NULL,             -- 'stdout' | 'stderr'
  part       TEXT NOT NULL,             -- 'head' | 'tail'
  gap_before BIGINT NOT NULL DEFAULT 0, -- bytes dropped just before this chunk
  data       BYTEA NOT NULL,
  PRIMARY KEY (task_id, seq)
);

CREATE TABLE agents (
  id              TEXT PRIMARY KEY,
  pool            TEXT NOT NULL,
  labels          TEXT NOT NULL,        -- JSON object
  hostname        TEXT NOT NULL,
  platform        TEXT NOT NULL,
  version         TEXT NOT NULL,
  task_kinds      TEXT NOT NULL,        -- JSON array
  max_concurrency INTEGER NOT NULL,
  first_seen_at   BIGINT NOT NULL,
  last_seen_at    BIGINT NOT NULL,
  last_session_id TEXT,
  connected       BOOLEAN NOT NULL,
  token_id        TEXT                  -- the token the id belongs to; NULL: the next one claims it
);
CREATE INDEX agents_pool ON agents (pool);

CREATE TABLE tokens (
  id             TEXT PRIMARY KEY,
  name           TEXT NOT NULL,
  role           TEXT NOT NULL,
  pools          TEXT NOT NULL,         -- JSON array; empty: all pools
  agent_id       TEXT,
  hash           TEXT NOT NULL CONSTRAINT tokens_hash UNIQUE, -- hex SHA-256 of the secret
  created_at     BIGINT NOT NULL,
  revoked_at     BIGINT,
  last_used_at   BIGINT,
  allow_takeover BOOLEAN NOT NULL DEFAULT FALSE
);
-- A name may be reused once the token that held it is revoked.
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE audit (
  id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- never reused
  at      BIGINT NOT NULL,
  actor   TEXT NOT NULL,
  action  TEXT NOT NULL,
  subject TEXT NOT NULL,
  detail  TEXT                          -- JSON object
);
CREATE INDEX audit_action ON audit (action);
CREATE INDEX audit_subject ON audit (subject);

CREATE TABLE nodes (
  id          TEXT PRIMARY KEY,
  agent_id    TEXT NOT NULL,
  desired     TEXT NOT NULL,            -- running | stopped
  spec        BYTEA NOT NULL,           -- NodeSpawn, encoded
  record      BYTEA,                    -- NodeRecord last reported, encoded
  record_at   BIGINT,
  reschedule  BOOLEAN NOT NULL DEFAULT FALSE,
  pool        TEXT NOT NULL DEFAULT '',
  labels      TEXT NOT NULL DEFAULT '{}',
  created_at  BIGINT NOT NULL,
  updated_at  BIGINT NOT NULL
);
CREATE INDEX nodes_agent ON nodes (agent_id);
`;
