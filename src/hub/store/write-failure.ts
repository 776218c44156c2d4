// When the store cannot write (a full disk, an I/O error, another process holding the lock), it
// holds its writes and retries; the hub stops taking and dispatching work meanwhile. This is what
// both sides know of such a spell, and the sentence clients and operators read about it.

/** Why the store cannot commit now. */
export interface StoreWriteFailure {
  /** The engine's error code, e.g. SQLITE_FULL or SQLITE_IOERR_WRITE. */
  code: string;
  /** The engine's message, e.g. "database or disk is full". */
  message: string;
  /** Where the store writes: the hub's data dir, or the database. */
  location: string;
  /** What `location` is, as the sentence names it: "data dir", "database". */
  locationKind: string;
  /** When the store first failed to commit in this spell (ms since epoch). */
  since: number;
}

/** "the hub's store cannot write: SQLITE_FULL: database or disk is full (data dir /x); retrying" */
export function writeFailureSentence(f: StoreWriteFailure): string {
  return `the hub's store cannot write: ${f.code}: ${f.message} (${f.locationKind} ${f.location}); retrying`;
}
