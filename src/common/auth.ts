// How tokens travel: `authorization: Bearer <token>` call metadata, on every side.
import { Metadata } from "@grpc/grpc-js";

export const AUTHORIZATION = "authorization";

export function bearerMetadata(token: string): Metadata {
  const md = new Metadata();
  if (token) md.set(AUTHORIZATION, `Bearer ${token}`);
  return md;
}

/** The token from call metadata, or undefined when absent or not a Bearer credential. */
export function tokenFromMetadata(md: Metadata): string | undefined {
  const raw = md.get(AUTHORIZATION)[0];
  if (typeof raw !== "string") return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(raw);
  return m?.[1];
}
