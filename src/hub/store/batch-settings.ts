// The settings of the batched write path both stores share: their defaults, and their validation
// once when a store opens. Each store adds its own (a lock timeout, a pool size) on top.
import { Code, SwitchboardError } from "../../common/errors.js";
import type { Logger } from "../../common/logger.js";
import type { StoreOptions } from "./interfaces.js";

export const DEFAULT_OUTPUT_CAP_BYTES = 1024 * 1024;
export const DEFAULT_FLUSH_INTERVAL_MS = 10;
export const DEFAULT_MAX_BATCH_OPS = 512;
export const DEFAULT_TAIL_PERSIST_INTERVAL_MS = 250;
/** While the store cannot write: the first retry, and the longest wait between two. */
export const RETRY_FIRST_MS = 100;
export const RETRY_MAX_MS = 2_000;
/**
 * Audit entries held at most while the store cannot write (about 400 bytes each). Everything else
 * it holds is keyed by task, agent, node or token and so bounded by them; past this, audit entries
 * are counted (the outage's own audit entry says how many), not kept.
 */
export const MAX_HELD_AUDITS = 20_000;

/** The options of a batching store. */
export interface BatchOptions extends StoreOptions {
  logger?: Logger;
  /** Writes that make the batch commit at once, before flushIntervalMs. Default 512. */
  maxBatchOps?: number;
  /** How often at most a task's rolling output tail is rewritten. Default 250 ms. */
  tailPersistIntervalMs?: number;
  /** While the store cannot write: the first retry's delay (doubling up to RETRY_MAX_MS). Default 100 ms. */
  retryFirstMs?: number;
}

/** What the batched write path runs on, validated. */
export interface BatchSettings {
  outputCapBytes: number;
  flushIntervalMs: number;
  maxBatchOps: number;
  tailPersistIntervalMs: number;
  retryFirstMs: number;
}

/** The options with their defaults filled in; throws INVALID_ARGUMENT for one out of range. */
export function batchSettings(opts: BatchOptions): BatchSettings {
  return {
    // At least one byte of tail, so that dropped bytes always have a tail chunk to mark the gap.
    outputCapBytes: option("outputCapBytes", opts.outputCapBytes, DEFAULT_OUTPUT_CAP_BYTES, 2),
    flushIntervalMs: option("flushIntervalMs", opts.flushIntervalMs, DEFAULT_FLUSH_INTERVAL_MS, 0),
    maxBatchOps: option("maxBatchOps", opts.maxBatchOps, DEFAULT_MAX_BATCH_OPS, 1),
    tailPersistIntervalMs: option(
      "tailPersistIntervalMs",
      opts.tailPersistIntervalMs,
      DEFAULT_TAIL_PERSIST_INTERVAL_MS,
      0,
    ),
    retryFirstMs: option("retryFirstMs", opts.retryFirstMs, RETRY_FIRST_MS, 1),
  };
}

/** A whole-number option: its value, or `fallback` when unset; INVALID_ARGUMENT below `min`. */
export function option(name: string, value: number | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min) {
    throw new SwitchboardError(
      Code.INVALID_ARGUMENT,
      `store option ${name} must be an integer >= ${min}, not ${value}`,
    );
  }
  return value;
}
