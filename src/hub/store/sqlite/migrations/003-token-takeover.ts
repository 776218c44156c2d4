// Agent tokens may allow a second process presenting the same agent id to take over a live
// session (a replacement host, a restarted container whose old process is not dead yet).
export const TOKEN_TAKEOVER = `
ALTER TABLE tokens ADD COLUMN allow_takeover INTEGER NOT NULL DEFAULT 0;
`;
