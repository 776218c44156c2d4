// TLS on the wire: server credentials for the hub (optionally requiring client certificates:
// mutual TLS) and client credentials for agents and clients. Files are read once, at start;
// a missing, unreadable or unusable file is an error that names the setting.
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { credentials, ServerCredentials, type ChannelCredentials, type ChannelOptions } from "@grpc/grpc-js";
import { Code, SwitchboardError } from "./errors.js";

export interface ServerTlsFiles {
  cert: string;
  key: string;
  /** Client certificates must be signed by this CA (mutual TLS). */
  clientCa?: string;
}

export interface ClientTlsFiles {
  /** CA that signed the hub's certificate; default: the system's roots. */
  ca?: string;
  /** Client certificate and key, for a hub that requires them (mutual TLS). */
  cert?: string;
  key?: string;
  /** Name to check the hub's certificate against, when it differs from the dialled host. */
  serverName?: string;
}

/** A TLS file that cannot be read or used (INVALID_ARGUMENT); the message names its setting. */
export class TlsFileError extends SwitchboardError {
  constructor(
    readonly setting: string,
    readonly file: string,
    cause: unknown,
    /** What is wrong with a file that was read ("is not a PEM certificate: ..."); default: unreadable. */
    problem?: string,
  ) {
    super(
      Code.INVALID_ARGUMENT,
      problem !== undefined
        ? `${setting}: ${file} ${problem}`
        : `${setting}: cannot read ${file}: ${(cause as NodeJS.ErrnoException).code ?? String(cause)}`,
      { cause },
    );
    this.name = "TlsFileError";
  }
}

/** OpenSSL's reason, without its numeric prefix ("error:0480006C:PEM routines::no start line"). */
function reasonOf(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.replace(/^error:[0-9A-F]+:[^:]*::?/, "");
}

/** Parses a certificate at start, so that a wrong file stops the process naming its setting. */
function checkCertificate(setting: string, file: string, pem: Buffer): void {
  try {
    new X509Certificate(pem);
  } catch (e) {
    throw new TlsFileError(setting, file, e, `is not a PEM certificate: ${reasonOf(e)}`);
  }
}

/** The key must be a PEM private key that belongs to the certificate. */
function checkKeyPair(keyFile: string, cert: Buffer, key: Buffer): void {
  try {
    createSecureContext({ cert, key });
  } catch (e) {
    throw new TlsFileError(
      "tls.key",
      keyFile,
      e,
      `is not the PEM private key of the certificate in tls.cert: ${reasonOf(e)}`,
    );
  }
}

export function readTlsFile(setting: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new TlsFileError(setting, file, e);
  }
}

export function serverCredentials(tls: ServerTlsFiles | undefined): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  const clientCa = tls.clientCa ? readTlsFile("tls.client_ca", tls.clientCa) : null;
  if (clientCa !== null) checkCertificate("tls.client_ca", tls.clientCa!, clientCa);
  const cert = readTlsFile("tls.cert", tls.cert);
  const key = readTlsFile("tls.key", tls.key);
  checkCertificate("tls.cert", tls.cert, cert);
  checkKeyPair(tls.key, cert, key);
  return ServerCredentials.createSsl(clientCa, [{ cert_chain: cert, private_key: key }], clientCa !== null);
}

export interface ClientChannel {
  credentials: ChannelCredentials;
  options: ChannelOptions;
}

export function clientChannel(tls: ClientTlsFiles | undefined): ClientChannel {
  if (!tls) return { credentials: credentials.createInsecure(), options: {} };
  const ca = tls.ca ? readTlsFile("tls.ca", tls.ca) : null;
  const key = tls.key ? readTlsFile("tls.key", tls.key) : null;
  const cert = tls.cert ? readTlsFile("tls.cert", tls.cert) : null;
  if (ca !== null) checkCertificate("tls.ca", tls.ca!, ca);
  if (cert !== null) checkCertificate("tls.cert", tls.cert!, cert);
  if (cert !== null && key !== null) checkKeyPair(tls.key!, cert, key);
  const options: ChannelOptions = tls.serverName
    ? { "grpc.ssl_target_name_override": tls.serverName, "grpc.default_authority": tls.serverName }
    : {};
  return { credentials: credentials.createSsl(ca, key, cert), options };
}

/** True for addresses only this machine can reach: 127.0.0.0/8, ::1, localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}
