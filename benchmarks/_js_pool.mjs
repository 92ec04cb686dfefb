// The JS SDK v3 loop, for benchmarks/fanout.py: one client, CONCURRENCY async workers.
//
// Usage: `node benchmarks/_js_pool.mjs ENDPOINT IDS_FILE CONCURRENCY` (NODE_PATH names the
// node_modules the benchmark installed). Posts "hello" to every id in the file, then prints one
// JSON line: {"sent": S, "failed": F, "loop_s": T}, T from the first call to the last answer.
// Exits 1 if any call failed.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(process.env.WSCONN_BENCH_NODE_MODULES + "/");
const {
  ApiGatewayManagementApiClient,
  PostToConnectionCommand,
} = require("@aws-sdk/client-apigatewaymanagementapi");
const { NodeHttpHandler } = require("@smithy/node-http-handler");
const http = require("node:http");

const [endpoint, idsFile, concurrencyText] = process.argv.slice(2);
const concurrency = Number(concurrencyText);
const ids = readFileSync(idsFile, "utf8").split("\n").map((l) => l.trim()).filter(Boolean);
// As a user tuning for throughput would: a keep-alive agent with one socket per worker.
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
const client = new ApiGatewayManagementApiClient({
  endpoint,
  region: "us-east-1",
  requestHandler: new NodeHttpHandler({ httpAgent: agent, httpsAgent: agent }),
});

let next = 0;
let sent = 0;
let failed = 0;
async function worker() {
  while (next < ids.length) {
    const connectionId = ids[next++];
    try {
      await client.send(new PostToConnectionCommand({ ConnectionId: connectionId, Data: "hello" }));
      sent++;
    } catch (error) {
      failed++;
      console.error(`${connectionId}: ${error}`);
    }
  }
}

const start = performance.now();
await Promise.all(Array.from({ length: concurrency }, worker));
const loopS = (performance.now() - start) / 1000;
console.log(JSON.stringify({ sent, failed, loop_s: loopS }));
agent.destroy();
process.exitCode = failed ? 1 : 0;
