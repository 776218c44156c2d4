// Channel and server options both sides share: message size limit and HTTP/2 keepalive, so that a
// peer that vanishes without a FIN is found by a missed ping rather than a TCP timeout.
import type { ChannelOptions } from "@grpc/grpc-js";

export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
// A peer that stops answering (no FIN: a partition, a frozen host) is found within 10 s.
export const KEEPALIVE_TIME_MS = 5_000;
export const KEEPALIVE_TIMEOUT_MS = 5_000;

export function serverOptions(maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES): ChannelOptions {
  return {
    "grpc.max_receive_message_length": maxMessageBytes,
    "grpc.max_send_message_length": maxMessageBytes,
    "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
    "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
    // Agents ping every KEEPALIVE_TIME_MS even with no call active; let them.
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.min_ping_interval_without_data_ms": 4_000,
    "grpc.http2.max_ping_strikes": 0,
  };
}

export function clientOptions(maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES): ChannelOptions {
  return {
    "grpc.max_receive_message_length": maxMessageBytes,
    "grpc.max_send_message_length": maxMessageBytes,
    "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
    "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
    "grpc.keepalive_permit_without_calls": 1,
    // We dial again ourselves with our own backoff; do not let the channel hide failures.
    "grpc.enable_retries": 0,
    // A larger receive window than HTTP/2's 64 KiB default, so that a fast stream (task output)
    // is not held to one window per round trip.
    "grpc-node.flow_control_window": 4 * 1024 * 1024,
  };
}
