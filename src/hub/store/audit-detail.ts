// An audit entry's detail as both stores keep it: JSON text, serialized once when the entry is
// queued, so that a detail that cannot be serialized is noted then rather than failing a commit.
import type { Logger } from "../../common/logger.js";
import { errorMessage } from "./errors.js";
import type { AuditEntry } from "./interfaces.js";

/** The entry's detail as stored: JSON, or a note that it could not be serialized. */
export function serializeDetail(entry: AuditEntry, logger: Logger): string | null {
  if (entry.detail === undefined) return null;
  try {
    return JSON.stringify(entry.detail);
  } catch (err) {
    logger.warn({ err, action: entry.action, subject: entry.subject }, "store audit detail not serializable");
    return JSON.stringify({ error: `detail could not be serialized: ${errorMessage(err)}` });
  }
}
