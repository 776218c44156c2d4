// CI's slice of the hub fuzzer (npm run fuzz runs 100,000 inputs).
import { afterAll, describe, expect, it } from "vitest";
import { fuzzHub } from "./fuzz/hub-fuzzer.js";
import { stopAll } from "./support/processes.js";

afterAll(stopAll);

describe("hub fuzzer (CI slice)", () => {
  it("answers malformed and hostile input with statuses, stays up, and keeps serving others", async () => {
    const report = await fuzzHub({ inputs: 3_000 });
    expect(report.inputs).toBeGreaterThanOrEqual(3_000);
    expect(report.controlChecks).toBeGreaterThan(0);
    // Refusals came back as statuses (invalid argument, unauthenticated, permission...), not hangs.
    const codes = Object.keys(report.statuses);
    expect(codes.length).toBeGreaterThan(2);
  }, 240_000);
});
