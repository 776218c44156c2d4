// The PostgreSQL schema migrations, in order. Append new ones; never edit one that has shipped.
import { INITIAL } from "./001-initial.js";

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [{ version: 1, name: "initial", sql: INITIAL }];
