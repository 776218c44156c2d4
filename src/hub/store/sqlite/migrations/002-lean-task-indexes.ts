// Fewer indexes on tasks, because every index is one more B-tree page written per commit:
// created_at duplicates the order of the UUIDv7 primary key, and only unfinished tasks are ever
// looked up by state (recovery after a restart), so that index keeps only those rows.
export const LEAN_TASK_INDEXES = `
DROP INDEX tasks_created_at;
DROP INDEX tasks_state;
CREATE INDEX tasks_unfinished ON tasks (state) WHERE state IN ('queued', 'assigned', 'running');
`;
