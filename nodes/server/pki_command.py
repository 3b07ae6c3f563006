"""``run_scenario.py pki``: a CA, node and SAE certificates for serving over mutual TLS."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from nodes.server.pki import curl_example, register_example, write_pki


def pki_command(argv: list[str], script: str) -> int:
    """``run_scenario.py pki``: write the files, and print how to serve a node with them
    (``script``: the command's path) and how each SAE registers."""

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
    url = f"https://127.0.0.1:{args.port}"
    db = (args.out / f"{nodes[0]}.db").absolute()
    print("serve a node with mutual TLS (a fresh database each time):")
    print(f"  rm -f {shlex.quote(str(db))}*; USE_HTTPS=true "
          f"CA_FILE={shlex.quote(str(files.ca_cert.absolute()))} "
          f"KME_CERT={shlex.quote(str(node_cert.absolute()))} "
          f"KME_KEY={shlex.quote(str(node_key.absolute()))} PORT={args.port} "
          f"USER_KEY_POOL_DB={shlex.quote(str(db))} {shlex.quote(sys.executable)} "
          f"{shlex.quote(script)} --serve")
    print("then, in another terminal, each SAE registers itself with its own certificate:")
    for sae in args.sae:
        print("  " + register_example(files, sae, url))
    slave = args.sae[1] if len(args.sae) > 1 else args.sae[0]
    print("and the first SAE reads its key status towards the second:")
    print("  " + curl_example(files, args.sae[0], slave, url))
    return 0
