// One PostToConnection with AWS's JS SDK v3; prints what the SDK saw as one JSON line.
// Usage: node post-to-connection.mjs ENDPOINT CONNECTION_ID DATA (keys from the environment).
import {
  ApiGatewayManagementApiClient,
  PostToConnectionCommand,
} from "@aws-sdk/client-apigatewaymanagementapi";

const [endpoint, connectionId, data] = process.argv.slice(2);
const client = new ApiGatewayManagementApiClient({ endpoint, region: "us-east-1", maxAttempts: 1 });
try {
  const out = await client.send(new PostToConnectionCommand({ ConnectionId: connectionId, Data: data }));
  console.log(JSON.stringify({ status: out.$metadata.httpStatusCode }));
} catch (error) {
  console.log(
    JSON.stringify({ status: error.$metadata?.httpStatusCode, name: error.name, message: error.message }),
  );
}
