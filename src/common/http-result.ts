// The result of an http task as it travels: the task's stderr carries one JSON line first (the response's
// status and headers), its stdout the body as received (or decoded), and Finished.result a JSON summary.
// Shared by the agent that writes them and the clients that read them.

/** The stderr line that comes before the body. */
export interface HttpResponseHead {
  /** The HTTP status code, e.g. 200. */
  status: number;
  /** The status line's text, e.g. "OK"; empty when the server sent none (HTTP/2). */
  status_text: string;
  /** Lower-case names; every value of a repeated header, in order. */
  headers: Record<string, string[]>;
  /** The final URL, after the redirects that were followed. */
  url: string;
}

/** Finished.result of an http task (on a failure too, once the response's head was read). */
export interface HttpResultSummary {
  /** The HTTP status code of the final response. */
  status: number;
  /** Body bytes sent on stdout (after decoding, when the task asked for it). */
  bytes: number;
  /** The final URL, after the redirects that were followed. */
  url: string;
}

/** Parses the head line; undefined when the text is not one. */
export function parseHttpHead(line: string): HttpResponseHead | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null) return undefined;
  const h = v as Partial<HttpResponseHead>;
  if (typeof h.status !== "number" || typeof h.url !== "string" || typeof h.headers !== "object") {
    return undefined;
  }
  return {
    status: h.status,
    status_text: typeof h.status_text === "string" ? h.status_text : "",
    headers: h.headers ?? {},
    url: h.url,
  };
}
