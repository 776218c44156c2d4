// The hub's node registry: what should run where (intent), and the last record each node's agent
// reported (reality as last seen), so that status survives an unreachable agent and a hub restart.
export const NODES = `
CREATE TABLE nodes (
  id          TEXT PRIMARY KEY,
  agent_id    TEXT NOT NULL,
  desired     TEXT NOT NULL,            -- running | stopped
  spec        BLOB NOT NULL,            -- NodeSpawn, encoded
  record      BLOB,                     -- NodeRecord last reported, encoded
  record_at   INTEGER,
  reschedule  INTEGER NOT NULL DEFAULT 0,
  pool        TEXT NOT NULL DEFAULT '',
  labels      TEXT NOT NULL DEFAULT '{}',
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
);
CREATE INDEX nodes_agent ON nodes (agent_id);
`;
