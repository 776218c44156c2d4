// Test certificates made with openssl: a CA, a hub certificate for 127.0.0.1 and localhost, and a
// client certificate, all signed by the CA; plus a second CA that signed nothing the hub trusts.
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./processes.js";

export interface TestCerts {
  dir: string;
  ca: string;
  hubCert: string;
  hubKey: string;
  clientCert: string;
  clientKey: string;
  /** A client certificate from a CA the hub does not trust. */
  strangerCert: string;
  strangerKey: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

function makeCa(dir: string, name: string): void {
  openssl(
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "2",
      "-subj",
      `/CN=${name}`,
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.pem`,
    ],
    dir,
  );
}

function makeCert(dir: string, name: string, ca: string, ext: string): void {
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(
    [
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-subj",
      `/CN=${name}`,
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.csr`,
    ],
    dir,
  );
  openssl(
    [
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      `${ca}.pem`,
      "-CAkey",
      `${ca}.key`,
      "-CAcreateserial",
      "-days",
      "2",
      "-out",
      `${name}.pem`,
      "-extfile",
      `${name}.ext`,
    ],
    dir,
  );
}

export function makeTestCerts(): TestCerts {
  const dir = tempDir("certs");
  makeCa(dir, "ca");
  makeCa(dir, "stranger-ca");
  makeCert(dir, "hub", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  makeCert(dir, "client", "ca", "extendedKeyUsage=clientAuth\n");
  makeCert(dir, "stranger", "stranger-ca", "extendedKeyUsage=clientAuth\n");
  const f = (n: string): string => join(dir, n);
  return {
    dir,
    ca: f("ca.pem"),
    hubCert: f("hub.pem"),
    hubKey: f("hub.key"),
    clientCert: f("client.pem"),
    clientKey: f("client.key"),
    strangerCert: f("stranger.pem"),
    strangerKey: f("stranger.key"),
  };
}
