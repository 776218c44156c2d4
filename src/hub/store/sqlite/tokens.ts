// Queries on the tokens table. Only the SHA-256 of a secret is stored; the lookup by hash runs on
// every authenticated call, on the unique index of the hash column.
import type { Database, Statement } from "better-sqlite3";
import type { Role, TokenRecord } from "../interfaces.js";
import { TOKEN_COLUMNS, tokenValues, toTokenRecord, type TokenRow } from "../records.js";

const INSERT_TOKEN = `INSERT INTO tokens (${TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;

const SELECT_TOKEN_BY_HASH = `SELECT ${TOKEN_COLUMNS} FROM tokens WHERE hash = ?`;

const SELECT_TOKEN_BY_ID = `SELECT ${TOKEN_COLUMNS} FROM tokens WHERE id = ?`;

const SELECT_LIVE_TOKEN_BY_NAME = `SELECT ${TOKEN_COLUMNS} FROM tokens WHERE name = ? AND revoked_at IS NULL`;

const SELECT_LIVE_TOKENS = `SELECT ${TOKEN_COLUMNS} FROM tokens WHERE revoked_at IS NULL ORDER BY created_at, id`;

const SELECT_ALL_TOKENS = `SELECT ${TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id`;

const REVOKE_TOKEN = `UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`;

const TOUCH_TOKEN = `
UPDATE tokens SET last_used_at = ?
WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`;

type InsertParams = [
  string,
  string,
  Role,
  string,
  string | null,
  string,
  number,
  number | null,
  number | null,
  number,
];

export class TokenQueries {
  private readonly insertStmt: Statement<InsertParams>;
  private readonly byHashStmt: Statement<[string], TokenRow>;
  private readonly byIdStmt: Statement<[string], TokenRow>;
  private readonly byNameStmt: Statement<[string], TokenRow>;
  private readonly liveStmt: Statement<[], TokenRow>;
  private readonly allStmt: Statement<[], TokenRow>;
  private readonly revokeStmt: Statement<[number, string]>;
  private readonly touchStmt: Statement<[number, string, number]>;

  constructor(db: Database) {
    this.insertStmt = db.prepare(INSERT_TOKEN);
    this.byHashStmt = db.prepare(SELECT_TOKEN_BY_HASH);
    this.byIdStmt = db.prepare(SELECT_TOKEN_BY_ID);
    this.byNameStmt = db.prepare(SELECT_LIVE_TOKEN_BY_NAME);
    this.liveStmt = db.prepare(SELECT_LIVE_TOKENS);
    this.allStmt = db.prepare(SELECT_ALL_TOKENS);
    this.revokeStmt = db.prepare(REVOKE_TOKEN);
    this.touchStmt = db.prepare(TOUCH_TOKEN);
  }

  insert(t: TokenRecord): void {
    this.insertStmt.run(...tokenValues(t, (b) => (b ? 1 : 0)));
  }

  byHash(hash: string): TokenRecord | undefined {
    const row = this.byHashStmt.get(hash);
    return row && toTokenRecord(row);
  }

  byId(id: string): TokenRecord | undefined {
    const row = this.byIdStmt.get(id);
    return row && toTokenRecord(row);
  }

  liveByName(name: string): TokenRecord | undefined {
    const row = this.byNameStmt.get(name);
    return row && toTokenRecord(row);
  }

  list(includeRevoked: boolean): TokenRecord[] {
    return (includeRevoked ? this.allStmt : this.liveStmt).all().map(toTokenRecord);
  }

  /** Returns false when the token is unknown or already revoked. */
  revoke(id: string, at: number): boolean {
    return this.revokeStmt.run(at, id).changes > 0;
  }

  touch(id: string, at: number): void {
    this.touchStmt.run(at, id, at);
  }
}
