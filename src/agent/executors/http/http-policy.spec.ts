// What http tasks may reach: allowlist prefixes that no URL trick slips past, and the addresses refused
// whatever a name resolves to (IPv4-mapped and NAT64 forms included).
import type { LookupAddress } from "node:dns";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Code } from "../../../common/errors.js";
import {
  checkUrl,
  forbiddenAddress,
  ForbiddenAddressError,
  guardedLookup,
  parseAllowPrefix,
  parseIPv6,
  type AllowPrefix,
} from "./http-policy.js";

function prefixes(...raw: string[]): AllowPrefix[] {
  return raw.map((r) => {
    const p = parseAllowPrefix(r);
    if (typeof p === "string") throw new Error(p);
    return p;
  });
}

function allowed(url: string, allow: AllowPrefix[]): boolean {
  return checkUrl(url, allow, "a1").ok;
}

describe("parseAllowPrefix", () => {
  it("normalizes scheme, host, port and path", () => {
    expect(parseAllowPrefix("HTTP://Svc.Internal/api")).toEqual({
      protocol: "http:",
      hostname: "svc.internal",
      port: "80",
      path: "/api",
      href: "http://svc.internal/api",
    });
    expect(parseAllowPrefix("https://svc:8443")).toMatchObject({ port: "8443", path: "/" });
    expect(parseAllowPrefix("http://[::1]:9/")).toMatchObject({ hostname: "[::1]", port: "9" });
  });

  it("refuses what is not a plain http(s) prefix, and forbidden addresses", () => {
    expect(parseAllowPrefix("svc.internal:8080")).toMatch(/only http:\/\/ and https:\/\//);
    expect(parseAllowPrefix("not a url")).toMatch(/^not a URL/);
    expect(parseAllowPrefix("ftp://files/")).toMatch(/only http:\/\/ and https:\/\//);
    expect(parseAllowPrefix("http://user:pw@svc/")).toMatch(/user name or password/);
    expect(parseAllowPrefix("http://svc/?a=1")).toMatch(/query or a fragment/);
    expect(parseAllowPrefix("http://169.254.169.254/")).toMatch(/cloud metadata address/);
    expect(parseAllowPrefix("http://[fe80::1]/")).toMatch(/link-local/);
  });
});

describe("checkUrl", () => {
  const allow = prefixes("http://allowed.com/", "http://svc:8080/api", "https://files.internal/pub/");

  it("lets through URLs under a prefix", () => {
    for (const url of [
      "http://allowed.com/",
      "http://ALLOWED.com:80/x?y=1",
      "http://svc:8080/api",
      "http://svc:8080/api/",
      "http://svc:8080/api/v1/items?q=2#frag",
      "https://files.internal/pub/a.tar",
      "https://files.internal:443/pub/",
    ]) {
      expect(allowed(url, allow), url).toBe(true);
    }
  });

  it("refuses URL tricks that only look like an allowed prefix", () => {
    for (const url of [
      "http://allowed.com@evil.com/",
      "http://allowed.com.evil.com/",
      "http://evil.com/http://allowed.com/",
      "http://evil.com#@allowed.com/",
      "https://allowed.com/", // another scheme
      "http://allowed.com:8080/", // another port
      "http://svc:8080/apix",
      "http://svc:8080/api/../admin",
      "http://svc:8080/api/%2e%2e/admin",
      "http://svc:8080/api/..%2fadmin",
      "http://svc:8080/api/..%5Cadmin",
      "http://svc:8080/api\\..\\admin",
      "https://files.internal/pubx",
      "http://svc/api", // port 80, not 8080
    ]) {
      expect(allowed(url, allow), url).toBe(false);
    }
  });

  it("says why, with the status code a client can act on", () => {
    const off = checkUrl("http://evil.com/x?token=secret", allow, "a1");
    expect(off).toMatchObject({ ok: false, code: Code.PERMISSION_DENIED });
    const message = (off as { message: string }).message;
    expect(message).toContain("http://evil.com/x?…");
    expect(message).toContain("agent a1's [http] allow prefixes");
    expect(message).not.toContain("secret");
    expect(checkUrl("ftp://allowed.com/", allow, "a1")).toMatchObject({ code: Code.INVALID_ARGUMENT });
    expect(checkUrl("nope", allow, "a1")).toMatchObject({ code: Code.INVALID_ARGUMENT });
    // WHATWG URLs have no IPv6 zones: such a URL is refused before any address check.
    expect(checkUrl("http://[fe80::1%25eth0]/", allow, "a1")).toMatchObject({ code: Code.INVALID_ARGUMENT });
    expect(checkUrl("http://u:p@allowed.com/", allow, "a1")).toMatchObject({
      code: Code.INVALID_ARGUMENT,
      message: expect.stringMatching(/Authorization header/) as unknown,
    });
  });

  it("refuses forbidden literal addresses in every spelling, even without a prefix naming them", () => {
    const loopback = prefixes("http://127.0.0.1:8080/");
    expect(allowed("http://2130706433:8080/", loopback)).toBe(true); // the parser's 127.0.0.1
    for (const url of [
      "http://169.254.169.254/latest/meta-data/",
      "http://0xa9fea9fe/",
      "http://2852039166/",
      "http://[::ffff:169.254.169.254]/",
      "http://[::ffff:a9fe:a9fe]/",
      "http://[fd00:ec2::254]/",
      "http://100.100.100.200/",
      "http://0.0.0.0:8080/",
      "http://[fe80::1]/",
    ]) {
      const v = checkUrl(url, loopback, "a1");
      expect(v.ok, url).toBe(false);
      expect((v as { message: string }).message, url).toMatch(/never reach it/);
    }
  });
});

describe("forbiddenAddress", () => {
  it("names link-local, metadata, unspecified and multicast addresses; allows the rest", () => {
    const cases: [string, RegExp | undefined][] = [
      ["169.254.169.254", /cloud metadata/],
      ["169.254.1.2", /link-local/],
      ["100.100.100.200", /cloud metadata/],
      ["0.0.0.0", /unspecified/],
      ["0.1.2.3", /unspecified/],
      ["224.0.0.1", /multicast/],
      ["255.255.255.255", /broadcast/],
      ["::", /unspecified/],
      ["fe80::1", /link-local/],
      ["febf:ffff::1", /link-local/],
      ["fd00:ec2::254", /cloud metadata/],
      ["::ffff:169.254.169.254", /cloud metadata/],
      ["::ffff:a9fe:1", /link-local/],
      ["::169.254.169.254", /cloud metadata/],
      ["64:ff9b::a9fe:a9fe", /cloud metadata/],
      ["::ffff:0.0.0.0", /unspecified/],
      ["ff02::1", /multicast/],
      ["127.0.0.1", undefined],
      ["10.1.2.3", undefined],
      ["192.168.1.1", undefined],
      ["100.100.100.201", undefined],
      ["169.253.255.255", undefined],
      ["::1", undefined],
      ["::ffff:127.0.0.1", undefined],
      ["fd00::1", undefined],
      ["fec0::1", undefined],
      ["2001:db8::1", undefined],
    ];
    for (const [ip, reason] of cases) {
      if (reason) expect(forbiddenAddress(ip), ip).toMatch(reason);
      else expect(forbiddenAddress(ip), ip).toBeUndefined();
    }
    expect(forbiddenAddress("example.com")).toBe("not an IP address");
  });

  it("judges an IPv4-mapped IPv6 address as its IPv4 address", () => {
    fc.assert(
      fc.property(fc.ipV4(), (v4) => {
        expect(forbiddenAddress(`::ffff:${v4}`)).toBe(forbiddenAddress(v4));
        const [a, b, c, d] = v4.split(".").map(Number) as [number, number, number, number];
        const hex = `::ffff:${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
        expect(forbiddenAddress(hex)).toBe(forbiddenAddress(v4));
      }),
    );
  });

  it("parses IPv6 in all its spellings", () => {
    expect(parseIPv6("::")).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect(parseIPv6("[::1]")).toEqual([0, 0, 0, 0, 0, 0, 0, 1]);
    expect(parseIPv6("fe80::1%eth0")).toEqual([0xfe80, 0, 0, 0, 0, 0, 0, 1]);
    expect(parseIPv6("1:2:3:4:5:6:7:8")).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(parseIPv6("::ffff:1.2.3.4")).toEqual([0, 0, 0, 0, 0, 0xffff, 0x102, 0x304]);
    expect(parseIPv6("1.2.3.4")).toBeUndefined();
    expect(parseIPv6("1::2::3")).toBeUndefined();
  });
});

describe("guardedLookup", () => {
  const names: Record<string, LookupAddress[]> = {
    "svc.test": [
      { address: "127.0.0.1", family: 4 },
      { address: "::1", family: 6 },
    ],
    "metadata.test": [{ address: "169.254.169.254", family: 4 }],
    "mixed.test": [
      { address: "10.0.0.1", family: 4 },
      { address: "::ffff:169.254.169.254", family: 6 },
    ],
  };
  const lookup = guardedLookup((h) => Promise.resolve(names[h] ?? []));
  const call = (
    host: string,
    options: { all?: boolean; family?: number },
  ): Promise<{ err: NodeJS.ErrnoException | null; address: unknown; family?: number }> =>
    new Promise((resolve) =>
      lookup(host, options, (err, address, family) => resolve({ err, address, family })),
    );

  it("answers like dns.lookup, one address or all of them, by family", async () => {
    expect(await call("svc.test", {})).toMatchObject({ err: null, address: "127.0.0.1", family: 4 });
    expect(await call("svc.test", { family: 6 })).toMatchObject({ address: "::1", family: 6 });
    expect((await call("svc.test", { all: true })).address).toEqual(names["svc.test"]);
    expect((await call("nowhere.test", {})).err?.code).toBe("ENOTFOUND");
  });

  it("refuses a name when any of its addresses is forbidden", async () => {
    const meta = await call("metadata.test", { all: true });
    expect(meta.err).toBeInstanceOf(ForbiddenAddressError);
    expect(meta.err?.message).toBe(
      "metadata.test resolves to 169.254.169.254, a cloud metadata address; http tasks never reach it",
    );
    // The forbidden address is of the other family than the one asked for: refused all the same.
    expect((await call("mixed.test", { family: 4 })).err).toBeInstanceOf(ForbiddenAddressError);
  });
});
