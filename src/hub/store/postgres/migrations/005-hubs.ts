// The hubs of a cluster: each task is its hub's (tasks.hub_id, taken from the connection's
// switchboard.hub_id setting, so that no statement of the write path changes), and a hub recovers
// its own unfinished tasks only.
// one lease row per hub, renewed on the database's clock (so that the hubs'
// own clocks need not agree), read by `switchboard hubs` and by the hubs themselves to tell which
// of them are gone. The incarnation names one run of a hub: a hub that finds its row renewed by
// another incarnation lost its lease (it was taken for dead) and says so. cluster_key holds the
// secret the hubs sign their NATS messages with: whoever may publish on NATS but cannot read the
// store cannot make a hub act.
export const HUBS = `
CREATE TABLE hubs (
  id              TEXT PRIMARY KEY,
  incarnation     TEXT NOT NULL,
  address         TEXT NOT NULL,
  version         TEXT NOT NULL,
  started_at      BIGINT NOT NULL,
  renewed_at      BIGINT NOT NULL,   -- the database's clock, milliseconds
  lease_ms        BIGINT NOT NULL,   -- its cluster.lease_secs: gone when not renewed for this long
  agents          INTEGER NOT NULL DEFAULT 0,
  clients         INTEGER NOT NULL DEFAULT 0,
  tasks_in_flight INTEGER NOT NULL DEFAULT 0,
  draining        BOOLEAN NOT NULL DEFAULT FALSE,
  taken_by        TEXT               -- the hub that took its unfinished tasks once its lease lapsed
);

ALTER TABLE tasks ADD COLUMN hub_id TEXT DEFAULT nullif(current_setting('switchboard.hub_id', true), '');

CREATE TABLE cluster_key (
  id  INTEGER PRIMARY KEY CHECK (id = 1),
  key BYTEA NOT NULL
);
`;
