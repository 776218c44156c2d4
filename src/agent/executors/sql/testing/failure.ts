// For the drivers' specs: the SqlError a statement fails with.
import { expect } from "vitest";
import { SqlError } from "../datasource.js";

/** The error a promise rejects with, which must be a SqlError; a promise that resolves fails the test. */
export async function failure(p: Promise<unknown>): Promise<SqlError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(SqlError);
    return e as SqlError;
  }
  throw new Error("expected a SqlError, got success");
}
