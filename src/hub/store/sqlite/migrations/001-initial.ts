// The first schema: tasks and their kept output, agents, tokens and the audit log.
//
// Written to run unchanged on SQLite and PostgreSQL where a portable form exists:
// timestamps are BIGINT milliseconds since the epoch, JSON is TEXT, booleans are INTEGER 0/1,
// bytes are BLOB (BYTEA in PostgreSQL). The one SQLite-only form is the audit id
// (INTEGER PRIMARY KEY AUTOINCREMENT, which is BIGINT GENERATED ALWAYS AS IDENTITY in PostgreSQL).
export const INITIAL = `
CREATE TABLE tasks (
  id            TEXT PRIMARY KEY,       -- UUIDv7: the primary key is also the creation order
  kind          TEXT NOT NULL,
  target        TEXT NOT NULL,          -- JSON TargetRecord
  pool          TEXT,                   -- target.pool, kept as a column so that it can be filtered on
  spec          BLOB NOT NULL,          -- TaskSpec protobuf (BYTEA in PostgreSQL)
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
  result        BLOB                    -- BYTEA in PostgreSQL
);
CREATE INDEX tasks_created_at ON tasks (created_at);
CREATE INDEX tasks_agent_id ON tasks (agent_id);
CREATE INDEX tasks_state ON tasks (state);
CREATE INDEX tasks_pool ON tasks (pool);

-- The kept part of each task's output: the head rows are written once, the tail rows are
-- replaced as the rolling tail moves. seq orders a task's rows as the output was produced.
CREATE TABLE task_output (
  task_id    TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
  seq        INTEGER NOT NULL,
  stream     TEXT NOT NULL,             -- 'stdout' | 'stderr'
  part       TEXT NOT NULL,             -- 'head' | 'tail'
  gap_before BIGINT NOT NULL DEFAULT 0, -- bytes dropped just before this chunk
  data       BLOB NOT NULL,             -- BYTEA in PostgreSQL
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
  connected       INTEGER NOT NULL      -- 0 | 1
);
CREATE INDEX agents_pool ON agents (pool);

CREATE TABLE tokens (
  id           TEXT PRIMARY KEY,
  name         TEXT NOT NULL,
  role         TEXT NOT NULL,
  pools        TEXT NOT NULL,           -- JSON array; empty: all pools
  agent_id     TEXT,
  hash         TEXT NOT NULL UNIQUE,    -- hex SHA-256 of the secret
  created_at   BIGINT NOT NULL,
  revoked_at   BIGINT,
  last_used_at BIGINT
);
-- A name may be reused once the token that held it is revoked.
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE audit (
  id      INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused; IDENTITY in PostgreSQL
  at      BIGINT NOT NULL,
  actor   TEXT NOT NULL,
  action  TEXT NOT NULL,
  subject TEXT NOT NULL,
  detail  TEXT                          -- JSON object
);
CREATE INDEX audit_action ON audit (action);
CREATE INDEX audit_subject ON audit (subject);
`;
