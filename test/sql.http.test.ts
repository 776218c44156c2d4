// The SQL suite again, every agent on the HTTP long-poll transport (the hub's HTTP port).
process.env.SWITCHBOARD_TEST_TRANSPORT = "http";
await import("./sql.test.js");
