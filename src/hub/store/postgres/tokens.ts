// Queries on the tokens table. Only the SHA-256 of a secret is stored; the lookup by hash runs on
// every authenticated call, on the unique index of the hash column. Touches (last used) are
// batched: one statement for every token touched in a commit.
import type { TokenRecord } from "../interfaces.js";
import { TOKEN_COLUMNS, tokenValues, toTokenRecord, type TokenRow } from "../records.js";
import type { Sql } from "./sql.js";

const INSERT_TOKEN = `INSERT INTO tokens (${TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`;

const SELECT_TOKEN_BY_HASH = `SELECT ${TOKEN_COLUMNS} FROM tokens WHERE hash = $1`;

const SELECT_TOKEN_BY_ID = `SELECT ${TOKEN_COLUMNS} FROM tokens WHERE id = $1`;

const SELECT_LIVE_TOKEN_BY_NAME = `SELECT ${TOKEN_COLUMNS} FROM tokens WHERE name = $1 AND revoked_at IS NULL`;

const SELECT_LIVE_TOKENS = `SELECT ${TOKEN_COLUMNS} FROM tokens WHERE revoked_at IS NULL ORDER BY created_at, id`;

const SELECT_ALL_TOKENS = `SELECT ${TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id`;

const REVOKE_TOKEN = `UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL`;

const TOUCH_TOKENS = `
UPDATE tokens AS t SET last_used_at = u.at
FROM unnest($1::text[], $2::bigint[]) AS u(id, at)
WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)`;

export async function insertToken(sql: Sql, t: TokenRecord): Promise<void> {
  await sql.query(
    INSERT_TOKEN,
    tokenValues(t, (b) => b),
  );
}

export async function tokenByHash(sql: Sql, hash: string): Promise<TokenRecord | undefined> {
  return first(await sql.query<TokenRow>(SELECT_TOKEN_BY_HASH, [hash]));
}

export async function tokenById(sql: Sql, id: string): Promise<TokenRecord | undefined> {
  return first(await sql.query<TokenRow>(SELECT_TOKEN_BY_ID, [id]));
}

export async function liveTokenByName(sql: Sql, name: string): Promise<TokenRecord | undefined> {
  return first(await sql.query<TokenRow>(SELECT_LIVE_TOKEN_BY_NAME, [name]));
}

export async function listTokens(sql: Sql, includeRevoked: boolean): Promise<TokenRecord[]> {
  const { rows } = await sql.query<TokenRow>(includeRevoked ? SELECT_ALL_TOKENS : SELECT_LIVE_TOKENS);
  return rows.map(toTokenRecord);
}

/** Returns false when the token is unknown or already revoked. */
export async function revokeToken(sql: Sql, id: string, at: number): Promise<boolean> {
  const { rowCount } = await sql.query(REVOKE_TOKEN, [at, id]);
  return (rowCount ?? 0) > 0;
}

export async function touchTokens(sql: Sql, touches: ReadonlyMap<string, number>): Promise<void> {
  if (touches.size > 0) await sql.query(TOUCH_TOKENS, touchParams(touches));
}

/** The 2 arrays of token touches: id, last used. */
export function touchParams(touches: ReadonlyMap<string, number>): unknown[] {
  return [[...touches.keys()], [...touches.values()]];
}

function first(result: { rows: TokenRow[] }): TokenRecord | undefined {
  return result.rows[0] && toTokenRecord(result.rows[0]);
}
