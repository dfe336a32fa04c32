"""The official MCP Python SDK (`mcp`) against ragmap's MCP server.

Run by tests/mcp.rs with the cached venv's python (scripts/test installs the
pinned SDK). Arguments, as JSON in argv[1]:

  transport  "stdio" (starts `RAGMAP -C WORKSPACE mcp`) or "http" (connects to URL)
  mode       "legacy" (the initialize handshake) or "auto" (server/discover, 2026-07-28)
  ragmap, workspace           for stdio
  url, key                    for http (key may be null)
  query, ask                  what to search for; a question for `ask`, or null to skip it

Calls the tools as a client would and prints one JSON object describing what
it saw, for the Rust side to check.
"""

import asyncio
import json
import os
import sys

import httpx2
import mcp
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def server_of(args):
    if args["transport"] == "stdio":
        # The SDK passes only a few safe variables on; ragmap's own (the cache,
        # the model directory) must reach the server too.
        env = {k: v for k, v in os.environ.items() if k.startswith("RAGMAP_")}
        return StdioServerParameters(
            command=args["ragmap"], args=["-C", args["workspace"], "mcp"], env=env
        )
    headers = {"Authorization": f"Bearer {args['key']}"} if args.get("key") else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))
    return streamable_http_client(args["url"], http_client=http)


def text_of(result):
    return "".join(getattr(block, "text", "") for block in result.content)


def tool_json(tool):
    annotations = tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else {}
    return {
        "name": tool.name,
        "description": tool.description,
        "annotations": annotations,
        "input": tool.input_schema,
        "output": tool.output_schema,
    }


async def call(client, name, arguments):
    result = await client.call_tool(name, arguments)
    return {
        "is_error": result.is_error,
        "structured": result.structured_content,
        "text": text_of(result),
    }


async def run(args):
    seen = {"sdk_version": mcp.__version__ if hasattr(mcp, "__version__") else None}
    async with Client(server_of(args), mode=args["mode"], read_timeout_seconds=300) as client:
        seen["protocol_version"] = client.protocol_version
        info = client.server_info
        seen["server"] = info.name if info else None
        seen["instructions"] = client.instructions
        tools = (await client.list_tools()).tools
        seen["tools"] = [tool_json(t) for t in tools]
        found = await call(client, "search", {"query": args["query"], "k": 3})
        seen["search"] = found
        seen["search_lexical"] = await call(
            client, "search", {"query": args["query"], "k": 2, "mode": "lexical"}
        )
        first = (found["structured"] or {}).get("results", [{}])[0]
        if first.get("id"):
            seen["fetch"] = await call(client, "fetch", {"id": first["id"]})
        seen["fetch_unknown"] = await call(client, "fetch", {"id": "999999999"})
        seen["search_empty"] = await call(client, "search", {"query": "  "})
        if args.get("ask"):
            seen["ask"] = await call(client, "ask", {"question": args["ask"]})
    return seen


def main():
    args = json.loads(sys.argv[1])
    from importlib.metadata import version

    seen = asyncio.run(run(args))
    seen["sdk_version"] = version("mcp")
    print(json.dumps(seen, ensure_ascii=False))


if __name__ == "__main__":
    main()
