// Seed 000 moves a query's result as one message of up to 2 GB (its server's channel options), while the
// hub's own services keep hub.max_message_bytes. grpc-js sets message limits per server, not per method,
// so the seed's limit ([seed000] max_message_bytes) reaches exactly the two places results travel by a
// server interceptor: SendCommand's response (sent) and AgntService.Connect's QueryResults (received).
// Everything else, the SendCommand request included (it is read before its token is checked), stays
// under the hub's limit, so a caller without a token still cannot make the hub buffer more than that.
import { constants as bufferConstants } from "node:buffer";
import type {
  ServerInterceptingCall,
  ServerInterceptingCallInterface,
  ServerInterceptor,
} from "@grpc/grpc-js";
import type { Logger } from "../../common/logger.js";
import { AgntServiceService, ClientServiceService } from "../../gen/seed000/app.js";

/** The seed's own limit: its server's grpc.max_send/receive_message_length (2 GB - 1). */
export const SEED_MAX_MESSAGE_BYTES = 2_147_483_647;

/**
 * A seed agent's QueryResult is decoded into a JS string, which V8 caps (about 512 MiB on 64-bit): a
 * message of at most this many bytes always decodes, so a larger one is refused by size, with a
 * status that says so, rather than failing in the decoder.
 */
export const SEED_MAX_RECEIVE_BYTES = Math.min(SEED_MAX_MESSAGE_BYTES, bufferConstants.MAX_STRING_LENGTH);

/** The fields of grpc-js's BaseServerInterceptingCall (1.10 to 1.14) that hold a call's limits. */
interface BaseCallLimits {
  maxSendMessageSize?: unknown;
  maxReceiveMessageSize?: unknown;
  decoder?: { maxReadMessageLength?: unknown };
}

/**
 * The interceptor that gives seed 000's result-carrying calls the seed's limit. It must be the server's
 * first interceptor: it adjusts the call grpc-js built for the stream, before any byte is read.
 * If grpc-js no longer keeps the limits where this expects them, it logs once and leaves the call at
 * the hub's limit (seed results then stop at hub.max_message_bytes, and the seed000 test says so).
 */
export function seedMessageLimits(maxMessageBytes: number, logger: Logger): ServerInterceptor {
  const sendPath: string = ClientServiceService.sendCommand.path;
  const receivePath: string = AgntServiceService.connect.path;
  const receiveLimit = Math.min(maxMessageBytes, SEED_MAX_RECEIVE_BYTES);
  let warned = false;
  const cannot = (): void => {
    if (warned) return;
    warned = true;
    logger.warn(
      { seed_max_message_bytes: maxMessageBytes },
      "cannot give seed-000 calls their own message limit (this grpc-js keeps it elsewhere): they use hub.max_message_bytes",
    );
  };
  // The call goes on as it is, not wrapped: grpc-js uses what an interceptor returns only through
  // ServerInterceptingCallInterface, and a wrapper on every call of the hub would cost for nothing.
  return (method, call: ServerInterceptingCallInterface) => {
    const same = call as ServerInterceptingCall;
    if (method.path !== sendPath && method.path !== receivePath) return same;
    const base = call as unknown as BaseCallLimits;
    if (method.path === sendPath) {
      if (typeof base.maxSendMessageSize === "number") base.maxSendMessageSize = maxMessageBytes;
      else cannot();
    } else if (
      typeof base.maxReceiveMessageSize === "number" &&
      typeof base.decoder?.maxReadMessageLength === "number"
    ) {
      base.maxReceiveMessageSize = receiveLimit;
      base.decoder.maxReadMessageLength = receiveLimit;
    } else {
      cannot();
    }
    return same;
  };
}
