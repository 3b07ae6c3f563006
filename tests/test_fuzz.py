"""schemathesis fuzzes a node served over mutual TLS on loopback from nodes/server/openapi.yaml.

Every check schemathesis has for a single request is on: no 5xx, every status, content type,
header and body as documented, schema-violating requests refused (4xx), undocumented methods 405
with a correct ``Allow``. ``positive_data_acceptance`` (a schema-valid request must not be 400) is
off for the operations whose 400s JSON Schema cannot express: register (``str.isprintable``
SAE IDs, already-registered users), enc_keys GET and POST (the slave must not be the caller;
``target_user_id`` must equal the slave) and dec_keys POST (a key ID repeated with different
``key_ID_extension`` objects). enc_keys may answer 503 when a pool runs dry (ETSI: not enough
key material); that every 503 was this and none an internal error is read from the node's own
``/metrics`` after the run.

Path SAE IDs, the caller header and key IDs come half of the time from dictionaries of real
users and keys, so requests reach the key logic (keys are really delivered and read), and half
of the time from the schema (unknown SAEs, odd strings). Examples per operation and the seed are
bounded; the run takes about 25 s.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support import API, OPERATOR, Node, store_audit

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "nodes" / "server" / "openapi.yaml"
ALICE, BOB, CAROL = "SAE_ALICE_001", "SAE_BOB_001", "SAE_CAROL_001"
EXAMPLES_PER_OPERATION = 30
SEED = 20260701
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance",
          "negative_data_rejection", "positive_data_acceptance", "missing_required_header",
          "unsupported_method", "allow_header_conformance", "use_after_free",
          "ensure_resource_availability")
ENC_KEYS = ("getKeySimple", "getKey")
POSITIVE_400_BY_DESIGN = ("register", "getKeyWithKeyIds")


def config(key_ids: list[str]) -> str:
    checks = "\n".join(f"{name}.enabled = true" for name in CHECKS)
    return f"""
[generation]
database = "none"

[checks]
{checks}

[dictionaries.saes]
values = {json.dumps([ALICE, BOB, CAROL])}

[dictionaries.me]
values = {json.dumps([ALICE])}

[dictionaries.keys]
values = {json.dumps(key_ids)}

[parameters]
"path.slave_SAE_ID" = {{ dictionary = "saes", probability = 0.5 }}
"path.master_SAE_ID" = {{ dictionary = "saes", probability = 0.5 }}
"path.SAE_ID" = {{ dictionary = "saes", probability = 0.3 }}
"header.X-SAE-ID" = {{ dictionary = "me", probability = 0.5 }}
"query.key_ID" = {{ dictionary = "keys", probability = 0.5 }}
"body.key_IDs[*].key_ID" = {{ dictionary = "keys", probability = 0.5 }}

[[operations]]
include-operation-id = {json.dumps(list(POSITIVE_400_BY_DESIGN))}
checks.positive_data_acceptance.enabled = false

[[operations]]
include-operation-id = {json.dumps(list(ENC_KEYS))}
checks.positive_data_acceptance.enabled = false
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
"""


async def run_schemathesis(node: Node, tmp: Path, key_ids: list[str]) -> tuple[int, str, dict]:
    assert node.pki is not None
    cert, key = node.pki.saes[ALICE]
    (tmp / "schemathesis.toml").write_text(config(key_ids))
    report = tmp / "report.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(tmp / "schemathesis.toml"),
        "run", str(DOCUMENT), "--url", node.url, "--tls-verify", str(node.pki.ca_cert),
        "--request-cert", str(cert), "--request-cert-key", str(key),
        "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", str(SEED), "--workers", "1",
        "--request-timeout", "10", "--report", "json", "--report-json-path", str(report),
        "--no-color", cwd=tmp, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=150)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace"), json.loads(report.read_text())


async def test_schemathesis_finds_no_5xx_and_no_response_outside_the_document(
        tmp_path: Path) -> None:
    node = await Node(tmp_path, tls=True, min_pool_size=10, max_pool_size=40,
                      default_pool_size=20).start((ALICE, BOB, CAROL))
    try:
        for sae in (ALICE, BOB, CAROL):
            await node.register(sae, pool=40)
        # keys BOB took from ALICE's pool: ALICE (the fuzzer's identity) is their slave
        status, body = await node.call(BOB, "POST", f"{API}/{ALICE}/enc_keys",
                                       json={"number": 10, "size": 256})
        assert status == 200, body
        key_ids = [k["key_ID"] for k in body["keys"]]
        code, output, report = await run_schemathesis(node, tmp_path, key_ids)
        tail = output[-6000:]
        assert code == 0, tail
        assert report["errors"] == [] and report["failures"] == [], tail
        assert report["operations"]["tested"] == report["operations"]["total"] == 16, tail
        assert report["test_cases"]["generated"] >= 16 * 10, report["test_cases"]
        print(f"schemathesis: {report['test_cases']['generated']} test cases, "
              f"{report['running_time']:.1f} s")
        # The node is still up, answered no internal error, and kept the store sound.
        status, body = await node.call(ALICE, "GET", "/health")
        assert status == 200 and body["status"] == "healthy"
        status, text = await node.call(OPERATOR, "GET", "/metrics")
        failures: Counter[str] = Counter()
        for family in text_string_to_metric_families(text):
            if family.name == "qkdsim_request_failures":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        failures[sample.labels["reason"]] += int(sample.value)
        assert sum(failures.values()) > 0 and "internal_error" not in failures, failures
        print(f"  refusals by reason: {dict(failures)}")
        audit = await store_audit(node.lkm.store)
        assert audit["counter_mismatches"] == 0 and audit["duplicate_material"] == 0, audit
    finally:
        await node.close()
