#!/usr/bin/env python3
"""qkdsim command line: load, build, run, report. The logic lives in simulator/ and nodes/.

  run_scenario.py SCENARIO.yaml [--out DIR] [--seed N] [--until DURATION]   run a scenario
  run_scenario.py SCENARIO.yaml --serve                                      serve it in wall time
  run_scenario.py --serve                    serve one LKM configured by the seed's env variables
  run_scenario.py validate SCENARIO.yaml     check a scenario, print its errors
  run_scenario.py schema                     print the scenario JSON Schema
  run_scenario.py pki --out DIR --sae ID...  write a CA, node and SAE certificates

Exit codes: 0 ok (every expectation held), 1 an expectation failed, 2 invalid input or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_EXPECTATION, EXIT_USAGE = 0, 1, 2


def pki_main(argv: list[str]) -> int:
    from nodes.pki import curl_example, write_pki

    parser = argparse.ArgumentParser(prog="run_scenario.py pki",
                                     description="Write a CA, node and SAE certificates.")
    parser.add_argument("--out", required=True, type=Path, help="folder for the PEM files")
    parser.add_argument("--sae", action="append", required=True, help="an SAE ID (repeatable)")
    parser.add_argument("--node", action="append", help="a node ID (default: kme)")
    parser.add_argument("--host", action="append", help="server names (default: localhost, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8010)
    args = parser.parse_args(argv)
    nodes = args.node or ["kme"]
    files = write_pki(args.out, nodes, args.sae, tuple(args.host or ("localhost", "127.0.0.1")))
    node_cert, node_key = files.nodes[nodes[0]]
    print(f"wrote CA, {len(files.nodes)} node and {len(files.saes)} SAE certificates to {args.out}")
    print("serve a node with mutual TLS:")
    print(f"  USE_HTTPS=true CA_FILE={files.ca_cert} KME_CERT={node_cert} KME_KEY={node_key} "
          f"PORT={args.port} python run_scenario.py --serve")
    slave = args.sae[1] if len(args.sae) > 1 else args.sae[0]
    print("then, as the first SAE:")
    print("  " + curl_example(files, args.sae[0], slave, f"https://127.0.0.1:{args.port}"))
    return EXIT_OK


def serve_node_main() -> int:
    from nodes.config import ConfigError, NodeConfig
    from nodes.serve import serve_forever

    try:
        config = NodeConfig.from_env(os.environ)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        asyncio.run(serve_forever(config, announce=lambda line: print(line, flush=True)))
    except OSError as error:
        print(f"error: cannot serve on {config.host}:{config.port}: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pki"]:
        return pki_main(argv[1:])
    parser = argparse.ArgumentParser(prog="run_scenario.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", type=Path)
    parser.add_argument("--serve", action="store_true", help="serve in wall-clock time")
    args = parser.parse_args(argv)
    if args.serve and args.scenario is None:
        return serve_node_main()
    parser.print_usage(sys.stderr)
    print("error: a scenario file or --serve is required", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
