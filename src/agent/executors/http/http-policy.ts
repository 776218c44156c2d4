// What an http task may reach: a URL under one of the agent's [http] allow prefixes, and never a
// link-local, cloud-metadata or unspecified address, whatever a name resolves to. Checked when a task is
// admitted, on every redirect, and on the addresses a connection really uses (the request's lookup).
import type { LookupAddress } from "node:dns";
import { lookup as dnsLookup } from "node:dns/promises";
import { isIP, isIPv4, isIPv6, type LookupFunction } from "node:net";
import { Code } from "../../../common/errors.js";

/** One `[http] allow` entry, normalized: a URL matches when all four parts do. */
export interface AllowPrefix {
  /** "http:" or "https:". */
  protocol: string;
  /** Lower case, punycode for international names, "[::1]" for IPv6 (as WHATWG URL spells it). */
  hostname: string;
  /** Always explicit: "80" or "443" when the prefix left it out. */
  port: string;
  /** "/" at least. Ending in "/": any path below; else that path, or one below it ("/api" and "/api/x", not "/apix"). */
  path: string;
  /** The prefix as the URL parser normalized it, for messages. */
  href: string;
}

const DEFAULT_PORTS: Record<string, string> = { "http:": "80", "https:": "443" };

function portOf(url: URL): string {
  return url.port !== "" ? url.port : (DEFAULT_PORTS[url.protocol] ?? "");
}

/** A host as a socket wants it: without IPv6 brackets. */
export function socketHost(url: URL): string {
  return url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
}

/** Parses an allow entry; a string says what is wrong with it. */
export function parseAllowPrefix(raw: string): AllowPrefix | string {
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    return `not a URL: ${JSON.stringify(raw)}; expected a prefix like "http://svc.internal:8080/api/"`;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return `only http:// and https:// prefixes are allowed, got ${JSON.stringify(raw)}`;
  }
  if (url.username !== "" || url.password !== "") {
    return `a prefix may not hold a user name or password (given for ${url.host})`;
  }
  if (url.search !== "" || url.hash !== "") {
    return `a prefix may not hold a query or a fragment: ${JSON.stringify(raw)}`;
  }
  const forbidden = isIP(socketHost(url)) ? forbiddenAddress(socketHost(url)) : undefined;
  if (forbidden) return `${url.hostname} is ${forbidden}: http tasks never reach it`;
  return {
    protocol: url.protocol,
    hostname: url.hostname,
    port: portOf(url),
    path: url.pathname === "" ? "/" : url.pathname,
    href: url.href,
  };
}

/**
 * Whether the URL lies under the prefix. Both went through the WHATWG parser, so "http://a@b/" is host b,
 * "a.com.evil" is not "a.com", and "/api/../admin" is "/admin". Below a path prefix an encoded slash or
 * backslash is refused: a server that decodes it could resolve "..%2f" out of the prefix.
 */
export function underPrefix(url: URL, p: AllowPrefix): boolean {
  if (url.protocol !== p.protocol || url.hostname !== p.hostname || portOf(url) !== p.port) return false;
  const path = url.pathname;
  const inside = p.path.endsWith("/")
    ? path.startsWith(p.path)
    : path === p.path || path.startsWith(`${p.path}/`);
  if (!inside) return false;
  return p.path === "/" || !/%(2f|5c)/i.test(path.slice(p.path.length));
}

/** A URL as it may appear in a message: no query (it may hold a secret), clipped. */
export function shownUrl(url: URL | string): string {
  let s: string;
  if (typeof url === "string") s = url;
  else s = `${url.protocol}//${url.host}${url.pathname}${url.search !== "" ? "?…" : ""}`;
  return s.length > 200 ? `${s.slice(0, 197)}...` : s;
}

export type UrlVerdict = { ok: true; url: URL } | { ok: false; code: Code; message: string };

/** Whether an http task may request this URL (its literal address included; names are checked at connect). */
export function checkUrl(raw: string, allow: readonly AllowPrefix[], agentId: string): UrlVerdict {
  const refuse = (code: Code, message: string): UrlVerdict => ({ ok: false, code, message });
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return refuse(Code.INVALID_ARGUMENT, `not a valid URL: ${JSON.stringify(shownUrl(raw))}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return refuse(Code.INVALID_ARGUMENT, `only http and https URLs are allowed, got ${url.protocol}//`);
  }
  if (url.username !== "" || url.password !== "") {
    return refuse(
      Code.INVALID_ARGUMENT,
      `${shownUrl(url)}: a URL may not hold a user name or password; send an Authorization header instead`,
    );
  }
  const host = socketHost(url);
  const forbidden = isIP(host) ? forbiddenAddress(host) : undefined;
  if (forbidden) {
    return refuse(
      Code.PERMISSION_DENIED,
      `${shownUrl(url)}: ${host} is ${forbidden}; http tasks never reach it`,
    );
  }
  if (!allow.some((p) => underPrefix(url, p))) {
    return refuse(
      Code.PERMISSION_DENIED,
      `${shownUrl(url)} is not under any of agent ${agentId}'s [http] allow prefixes (${allow
        .map((p) => p.href)
        .join(", ")})`,
    );
  }
  return { ok: true, url };
}

// ---- addresses ----

function parseIPv4(s: string): number[] | undefined {
  if (!isIPv4(s)) return undefined;
  return s.split(".").map(Number);
}

/** The eight 16-bit groups of an IPv6 address (zone and brackets dropped), or undefined. */
export function parseIPv6(raw: string): number[] | undefined {
  let s = raw.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  if (!isIPv6(s)) return undefined;
  const lastColon = s.lastIndexOf(":");
  const v4 = parseIPv4(s.slice(lastColon + 1));
  if (v4) {
    s = `${s.slice(0, lastColon + 1)}${((v4[0]! << 8) | v4[1]!).toString(16)}:${((v4[2]! << 8) | v4[3]!).toString(16)}`;
  }
  const halves = s.split("::");
  const groups = (part: string | undefined): number[] =>
    part === undefined || part === "" ? [] : part.split(":").map((h) => parseInt(h, 16));
  const head = groups(halves[0]);
  if (halves.length === 1) return head.length === 8 ? head : undefined;
  const tail = groups(halves[1]);
  const fill = 8 - head.length - tail.length;
  if (fill < 1) return undefined;
  return [...head, ...new Array<number>(fill).fill(0), ...tail];
}

function v4Reason(b: number[]): string | undefined {
  const a = b[0]!;
  const c = b[1]!;
  const ip = b.join(".");
  if (ip === "169.254.169.254" || ip === "100.100.100.200") return "a cloud metadata address";
  if (a === 169 && c === 254) return "a link-local address";
  if (a === 0) return "an unspecified address (0.0.0.0/8)";
  if (a >= 224 && a <= 239) return "a multicast address";
  if (ip === "255.255.255.255") return "the broadcast address";
  return undefined;
}

/**
 * Why an http task may not connect to this address, or undefined when it may. Loopback and private
 * ranges are allowed: the allowlist decides which of them a task reaches. IPv6 forms that carry an IPv4
 * address (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d, NAT64 64:ff9b::/96) are judged by that address.
 */
export function forbiddenAddress(ip: string): string | undefined {
  const v4 = parseIPv4(ip);
  if (v4) return v4Reason(v4);
  const g = parseIPv6(ip);
  if (!g) return "not an IP address";
  const zeros = (from: number, to: number): boolean => g.slice(from, to).every((x) => x === 0);
  const embedded = [(g[6]! >> 8) & 0xff, g[6]! & 0xff, (g[7]! >> 8) & 0xff, g[7]! & 0xff];
  if (zeros(0, 8)) return "an unspecified address (::)";
  if (zeros(0, 5) && g[5] === 0xffff) return v4Reason(embedded); // ::ffff:a.b.c.d
  if (zeros(0, 4) && g[4] === 0xffff && g[5] === 0) return v4Reason(embedded); // ::ffff:0:a.b.c.d
  if (zeros(0, 6) && !(g[6] === 0 && g[7] === 1)) return v4Reason(embedded); // ::a.b.c.d (not ::1)
  if (g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6)) return v4Reason(embedded); // NAT64
  if (g[0] === 0xfd00 && g[1] === 0x0ec2 && zeros(2, 7) && g[7] === 0x254) return "a cloud metadata address";
  if ((g[0]! & 0xffc0) === 0xfe80) return "a link-local address";
  if ((g[0]! & 0xff00) === 0xff00) return "a multicast address";
  return undefined;
}

/** The connection went to (or a name resolved to) an address http tasks may not reach. */
export class ForbiddenAddressError extends Error {
  readonly code = "ERR_SWITCHBOARD_FORBIDDEN_ADDRESS";
  constructor(host: string, address: string, reason: string) {
    super(
      host === address
        ? `${address} is ${reason}; http tasks never reach it`
        : `${host} resolves to ${address}, ${reason}; http tasks never reach it`,
    );
    this.name = "ForbiddenAddressError";
  }
}

/** Resolves a host name to every address it has (dns.lookup by default; tests inject their own). */
export type Resolver = (hostname: string) => Promise<LookupAddress[]>;

export const systemResolver: Resolver = (hostname) => dnsLookup(hostname, { all: true, verbatim: true });

/**
 * A `lookup` for http.request that refuses a name when any of its addresses is forbidden, so the address a
 * connection uses is the address that was checked (no second resolution to rebind).
 */
export function guardedLookup(resolve: Resolver): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname).then(
      (all) => {
        const family = options.family === 4 || options.family === 6 ? options.family : 0;
        const addrs = family === 0 ? all : all.filter((a) => a.family === family);
        for (const a of all) {
          const why = forbiddenAddress(a.address);
          if (why) return callback(new ForbiddenAddressError(hostname, a.address, why), "", 0);
        }
        if (addrs.length === 0) {
          const err = Object.assign(new Error(`cannot resolve ${hostname}: no address`), {
            code: "ENOTFOUND",
          });
          return callback(err, "", 0);
        }
        if (options.all) return callback(null, addrs);
        callback(null, addrs[0]!.address, addrs[0]!.family);
      },
      (e: NodeJS.ErrnoException) => callback(e, "", 0),
    );
  };
}
