// Identifiers. Task ids are UUIDv7 so that they sort by creation time.
import { randomBytes } from "node:crypto";
import { v7 as uuidv7 } from "uuid";

export function newTaskId(): string {
  return uuidv7();
}

export function newSessionId(): string {
  return `ses_${randomBytes(12).toString("base64url")}`;
}

export function newInstanceId(): string {
  return randomBytes(8).toString("hex");
}
