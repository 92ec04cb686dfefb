// The seed's Node.js snippet as one process, for benchmarks/startup.py: one PostToConnectionCommand.
//
// Usage: `node benchmarks/_js_send.mjs ENDPOINT CONNECTION_ID MESSAGE` (WSCONN_BENCH_NODE_MODULES
// names the node_modules the benchmark installed). Exits 1 if the call fails.
import { createRequire } from "node:module";

const require = createRequire(process.env.WSCONN_BENCH_NODE_MODULES + "/");
const {
  ApiGatewayManagementApiClient,
  PostToConnectionCommand,
} = require("@aws-sdk/client-apigatewaymanagementapi");

const [endpoint, connectionId, data] = process.argv.slice(2);
const client = new ApiGatewayManagementApiClient({ endpoint });
try {
  await client.send(new PostToConnectionCommand({ ConnectionId: connectionId, Data: data }));
} catch (error) {
  console.error(String(error));
  process.exitCode = 1;
}
