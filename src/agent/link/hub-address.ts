// Hub addresses as a user writes them ("host:port", "host", "http://host:port", "[::1]:7000")
// normalized to the "host:port" target grpc-js dials.
export const DEFAULT_HUB_PORT = 7000;

/** The normalized "host:port", or throws an Error whose message says what is wrong. */
export function parseHubAddress(input: string): string {
  let rest = input.trim();
  if (rest === "") throw new Error("expected host:port, got an empty string");
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(rest);
  if (scheme) {
    const name = scheme[1]!.toLowerCase();
    if (name === "https" || name === "grpcs") {
      throw new Error(`"${input}" asks for TLS, which this agent does not support yet; use host:port`);
    }
    if (name !== "http" && name !== "grpc") {
      throw new Error(`"${input}" has an unknown scheme "${name}://"; use host:port or http://host:port`);
    }
    rest = rest.slice(scheme[0].length);
  }
  rest = rest.replace(/\/+$/, "");
  if (rest.includes("/")) throw new Error(`"${input}" has a path; use host:port`);

  let host: string;
  let portText: string | undefined;
  const v6 = /^\[([0-9a-f:.]+)\](?::(.*))?$/i.exec(rest);
  if (v6) {
    host = `[${v6[1]!}]`;
    portText = v6[2];
  } else {
    const parts = rest.split(":");
    if (parts.length > 2) throw new Error(`"${input}" is ambiguous; write IPv6 addresses as [addr]:port`);
    host = parts[0]!;
    portText = parts[1];
  }
  if (!/^[A-Za-z0-9._-]+$/.test(host) && !v6) throw new Error(`"${input}" has an invalid host name`);
  if (portText === undefined) return `${host}:${DEFAULT_HUB_PORT}`;
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) throw new Error(`"${input}" has an invalid port; use 1-65535`);
  return `${host}:${port}`;
}
