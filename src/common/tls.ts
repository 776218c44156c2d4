// TLS on the wire: server credentials for the hub (optionally requiring client certificates:
// mutual TLS) and client credentials for agents and clients. Files are read once, at start;
// a missing or unreadable file is an error that names the setting.
import { readFileSync } from "node:fs";
import { credentials, ServerCredentials, type ChannelCredentials, type ChannelOptions } from "@grpc/grpc-js";

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

export class TlsFileError extends Error {
  constructor(
    readonly setting: string,
    readonly file: string,
    cause: unknown,
  ) {
    super(`${setting}: cannot read ${file}: ${(cause as NodeJS.ErrnoException).code ?? String(cause)}`);
    this.name = "TlsFileError";
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
  return ServerCredentials.createSsl(
    clientCa,
    [{ cert_chain: readTlsFile("tls.cert", tls.cert), private_key: readTlsFile("tls.key", tls.key) }],
    clientCa !== null,
  );
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
