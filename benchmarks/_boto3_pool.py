"""The loop users write today, for benchmarks/fanout.py: one boto3 client, a thread pool.

Usage: `python benchmarks/_boto3_pool.py ENDPOINT IDS_FILE CONCURRENCY`. Posts b"hello" to every
id in the file, then prints one JSON line: `{"sent": S, "failed": F, "loop_s": T}`, where T runs
from the first call to the last answer. Exits 1 if any call failed.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import boto3


def main(endpoint: str, ids_file: str, concurrency: int) -> int:
    with open(ids_file) as lines:
        ids = [line.strip() for line in lines if line.strip()]
    client = boto3.client("apigatewaymanagementapi", endpoint_url=endpoint, region_name="us-east-1")

    def post(connection_id: str) -> bool:
        try:
            client.post_to_connection(ConnectionId=connection_id, Data=b"hello")
        except Exception as error:
            print(f"{connection_id}: {error}", file=sys.stderr)
            return False
        return True

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(post, ids))
    loop_s = time.perf_counter() - start
    sent = sum(results)
    print(json.dumps({"sent": sent, "failed": len(ids) - sent, "loop_s": loop_s}))
    return 0 if sent == len(ids) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
