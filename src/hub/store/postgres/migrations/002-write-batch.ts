// One statement per commit: write_batch() applies a whole batch (tasks inserted and patched,
// output totals, tails and rows, agents, audit entries, token touches, nodes) in the order the
// statement-by-statement path does, each kind as one multi-row statement over its arrays. A
// statement is its own transaction, so a commit costs one round trip to the database instead of a
// dozen (BEGIN, each kind, COMMIT). It returns the ids inserted and the ids patched, for the
// writer to tell duplicate inserts and unknown tasks apart. Empty arrays are skipped. It leaves a
// mark (writer, batch number) in commit_marks, so that a writer whose connection was lost before
// the answer came can ask whether the batch committed (uncertain-commits.ts).
//
// A task's patch and its output totals are one row update (a task updated twice in a commit costs
// two new row versions and their index entries). Parameters are named by kind (i_ inserts,
// u_ patches and totals, r_ output rows, a_ agents, e_ audit entries, t_ touches, n_ nodes) so
// that none is taken for a column.
export const WRITE_BATCH = `
-- One row per commit of each writer (a hub's store), so that a writer whose connection was lost
-- before the answer to a commit came can ask whether it committed. Pruned as write_batch() goes.
CREATE TABLE commit_marks (
  writer TEXT NOT NULL,
  batch  BIGINT NOT NULL,
  at     BIGINT NOT NULL,
  PRIMARY KEY (writer, batch)
);

CREATE FUNCTION write_batch(
  i_id text[], i_kind text[], i_target text[], i_pool text[], i_spec bytea[], i_state text[],
  i_agent_id text[], i_requester text[], i_created_at bigint[], i_assigned_at bigint[],
  i_deadline_at bigint[],
  u_id text[], u_mask int[], u_state text[], u_agent_id text[], u_assigned_at bigint[],
  u_started_at bigint[], u_finished_at bigint[], u_exit_code int[], u_signal text[],
  u_error_code int[], u_error_message text[], u_reason text[], u_duration_ms bigint[],
  u_result bytea[], u_stdout_bytes bigint[], u_stderr_bytes bigint[],
  tails_of text[],
  r_task_id text[], r_seq int[], r_stream text[], r_part text[], r_gap_before bigint[],
  r_data bytea[],
  disconnect_all boolean,
  a_id text[], a_pool text[], a_labels text[], a_hostname text[], a_platform text[],
  a_version text[], a_task_kinds text[], a_max_concurrency int[], a_first_seen_at bigint[],
  a_last_seen_at bigint[], a_last_session_id text[], a_connected boolean[], a_token_id text[],
  e_at bigint[], e_actor text[], e_action text[], e_subject text[], e_detail text[],
  t_id text[], t_at bigint[],
  n_deleted text[],
  n_id text[], n_agent_id text[], n_desired text[], n_spec bytea[], n_record bytea[],
  n_record_at bigint[], n_reschedule boolean[], n_pool text[], n_labels text[],
  n_created_at bigint[], n_updated_at bigint[],
  m_writer text, m_batch bigint,
  OUT inserted text[], OUT updated text[]
) LANGUAGE plpgsql AS $fn$
BEGIN
  inserted := '{}';
  updated := '{}';

  IF cardinality(i_id) > 0 THEN
    WITH rows AS (
      INSERT INTO tasks (id, kind, target, pool, spec, state, agent_id, requester, created_at,
                         assigned_at, deadline_at)
      SELECT * FROM unnest(i_id, i_kind, i_target, i_pool, i_spec, i_state, i_agent_id, i_requester,
                           i_created_at, i_assigned_at, i_deadline_at)
      ON CONFLICT (id) DO NOTHING
      RETURNING id)
    SELECT coalesce(array_agg(id), '{}') INTO inserted FROM rows;
  END IF;

  -- The statements that find existing rows run as EXECUTE, planned on each call: a plan kept from
  -- when the tables were small (a new store) scans them whole, and would stay until an ANALYZE.
  IF cardinality(u_id) > 0 THEN
    EXECUTE $sql$
      WITH rows AS (
        UPDATE tasks AS t SET
          state         = CASE WHEN u.mask & 1    <> 0 THEN u.state         ELSE t.state END,
          agent_id      = CASE WHEN u.mask & 2    <> 0 THEN u.agent_id      ELSE t.agent_id END,
          assigned_at   = CASE WHEN u.mask & 4    <> 0 THEN u.assigned_at   ELSE t.assigned_at END,
          started_at    = CASE WHEN u.mask & 8    <> 0 THEN u.started_at    ELSE t.started_at END,
          finished_at   = CASE WHEN u.mask & 16   <> 0 THEN u.finished_at   ELSE t.finished_at END,
          exit_code     = CASE WHEN u.mask & 32   <> 0 THEN u.exit_code     ELSE t.exit_code END,
          signal        = CASE WHEN u.mask & 64   <> 0 THEN u.signal        ELSE t.signal END,
          error_code    = CASE WHEN u.mask & 128  <> 0 THEN u.error_code    ELSE t.error_code END,
          error_message = CASE WHEN u.mask & 256  <> 0 THEN u.error_message ELSE t.error_message END,
          reason        = CASE WHEN u.mask & 512  <> 0 THEN u.reason        ELSE t.reason END,
          duration_ms   = CASE WHEN u.mask & 1024 <> 0 THEN u.duration_ms   ELSE t.duration_ms END,
          result        = CASE WHEN u.mask & 2048 <> 0 THEN u.result        ELSE t.result END,
          stdout_bytes  = CASE WHEN u.mask & 4096 <> 0 THEN u.stdout_bytes  ELSE t.stdout_bytes END,
          stderr_bytes  = CASE WHEN u.mask & 8192 <> 0 THEN u.stderr_bytes  ELSE t.stderr_bytes END
        FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
          AS u(id, mask, state, agent_id, assigned_at, started_at, finished_at, exit_code, signal,
               error_code, error_message, reason, duration_ms, result, stdout_bytes, stderr_bytes)
        WHERE t.id = u.id
        RETURNING t.id)
      SELECT coalesce(array_agg(id), '{}') FROM rows
    $sql$
    INTO updated
    USING u_id, u_mask, u_state, u_agent_id, u_assigned_at, u_started_at, u_finished_at,
          u_exit_code, u_signal, u_error_code, u_error_message, u_reason, u_duration_ms, u_result,
          u_stdout_bytes, u_stderr_bytes;
  END IF;

  IF cardinality(tails_of) > 0 THEN
    EXECUTE $sql$DELETE FROM task_output WHERE part = 'tail' AND task_id = ANY($1)$sql$ USING tails_of;
  END IF;

  IF cardinality(r_task_id) > 0 THEN
    INSERT INTO task_output (task_id, seq, stream, part, gap_before, data)
    SELECT * FROM unnest(r_task_id, r_seq, r_stream, r_part, r_gap_before, r_data)
    ON CONFLICT (task_id, seq) DO UPDATE SET
      stream = excluded.stream, part = excluded.part, gap_before = excluded.gap_before,
      data = excluded.data;
  END IF;

  IF disconnect_all THEN
    UPDATE agents SET connected = FALSE WHERE connected;
  END IF;

  IF cardinality(a_id) > 0 THEN
    INSERT INTO agents (id, pool, labels, hostname, platform, version, task_kinds, max_concurrency,
                        first_seen_at, last_seen_at, last_session_id, connected, token_id)
    SELECT * FROM unnest(a_id, a_pool, a_labels, a_hostname, a_platform, a_version, a_task_kinds,
                         a_max_concurrency, a_first_seen_at, a_last_seen_at, a_last_session_id,
                         a_connected, a_token_id)
    ON CONFLICT (id) DO UPDATE SET
      pool = excluded.pool, labels = excluded.labels, hostname = excluded.hostname,
      platform = excluded.platform, version = excluded.version, task_kinds = excluded.task_kinds,
      max_concurrency = excluded.max_concurrency, last_seen_at = excluded.last_seen_at,
      last_session_id = excluded.last_session_id, connected = excluded.connected,
      token_id = excluded.token_id;
  END IF;

  IF cardinality(e_at) > 0 THEN
    INSERT INTO audit (at, actor, action, subject, detail)
    SELECT e.at, e.actor, e.action, e.subject, e.detail
    FROM unnest(e_at, e_actor, e_action, e_subject, e_detail)
      WITH ORDINALITY AS e(at, actor, action, subject, detail, n)
    ORDER BY e.n;
  END IF;

  IF cardinality(t_id) > 0 THEN
    UPDATE tokens AS t SET last_used_at = u.at
    FROM unnest(t_id, t_at) AS u(id, at)
    WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at);
  END IF;

  IF cardinality(n_deleted) > 0 THEN
    DELETE FROM nodes WHERE id = ANY(n_deleted);
  END IF;

  IF cardinality(n_id) > 0 THEN
    INSERT INTO nodes (id, agent_id, desired, spec, record, record_at, reschedule, pool, labels,
                       created_at, updated_at)
    SELECT * FROM unnest(n_id, n_agent_id, n_desired, n_spec, n_record, n_record_at, n_reschedule,
                         n_pool, n_labels, n_created_at, n_updated_at)
    ON CONFLICT (id) DO UPDATE SET
      agent_id = excluded.agent_id, desired = excluded.desired, spec = excluded.spec,
      record = excluded.record, record_at = excluded.record_at, reschedule = excluded.reschedule,
      pool = excluded.pool, labels = excluded.labels, updated_at = excluded.updated_at;
  END IF;

  INSERT INTO commit_marks (writer, batch, at)
  VALUES (m_writer, m_batch, (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
  IF m_batch % 1024 = 0 THEN
    -- This writer's older marks, and those of writers gone for a day (hubs restarted since).
    DELETE FROM commit_marks
    WHERE (writer = m_writer AND batch < m_batch - 1024)
       OR at < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - 86400000;
  END IF;
END
$fn$;
`;

/** The parameters write_batch() takes, in order: what a call passes. */
export const WRITE_BATCH_ARITY = 69;
