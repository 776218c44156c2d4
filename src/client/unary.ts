// How the SDK's unary calls are made: the call with its options and callback; the client supplies the
// deadline, cancellation and error mapping (see SwitchboardClient).
import type { CallOptions } from "@grpc/grpc-js";

/** A grpc-js unary callback. */
export type Callback<T> = (err: Error | null, value?: T) => void;

/** Makes one unary call with a deadline (default: the client's call timeout); errors are SwitchboardErrors. */
export type UnaryCall = <T>(
  invoke: (opts: CallOptions, cb: Callback<T>) => unknown,
  timeoutMs?: number,
) => Promise<T>;
