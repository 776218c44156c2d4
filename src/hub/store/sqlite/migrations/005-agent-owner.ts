// An agent id belongs to the token it first registered with (and to its pool, already a column):
// another token may not register it. Rows from before this migration have no token (NULL): the
// first token allowed into the row's pool that connects with that id claims it.
export const AGENT_OWNER = `
ALTER TABLE agents ADD COLUMN token_id TEXT;
`;
