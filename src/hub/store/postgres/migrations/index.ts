// The PostgreSQL schema migrations, in order. Append new ones; never edit one that has shipped.
import type { Migration } from "../../migration.js";
import { INITIAL } from "./001-initial.js";
import { WRITE_BATCH } from "./002-write-batch.js";

export type { Migration };

export const MIGRATIONS: readonly Migration[] = [
  { version: 1, name: "initial", sql: INITIAL },
  { version: 2, name: "write_batch", sql: WRITE_BATCH },
];
