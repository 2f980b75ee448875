"""Scrapes a Bronze metrics endpoint and parses it with the official Python
Prometheus client, for tests/tests/metrics.rs.

usage: parse_metrics.py URL [--openmetrics] [--ca CA --cert CRT --key KEY | --ca CA]

Prints one JSON object: {"status", "content_type", "families": {name:
{"type", "unit", "samples": [[name, labels, value]]}}}, or {"error": ...}
when the connection or TLS handshake fails (or {"status", "body"} for a
non-200 answer). A body that does not parse makes the script fail.
"""

import argparse
import http.client
import json
import ssl
import sys
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--openmetrics", action="store_true")
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    args = ap.parse_args()

    context = None
    if args.url.startswith("https://"):
        context = ssl.create_default_context(cafile=args.ca)
        if args.cert:
            context.load_cert_chain(args.cert, args.key)
    headers = {}
    if args.openmetrics:
        # What Prometheus itself sends.
        headers["Accept"] = (
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )
    request = urllib.request.Request(args.url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            status = response.status
            content_type = response.headers.get("Content-Type", "")
            body = response.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        print(json.dumps({"status": e.code, "body": e.read().decode("utf-8", "replace")}))
        return
    except (urllib.error.URLError, ssl.SSLError, OSError, http.client.HTTPException) as e:
        # Refused, reset, a failed handshake, or a TLS alert read as HTTP.
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return

    parse = parse_openmetrics if args.openmetrics else parse_prometheus
    families = {}
    for family in parse(body):
        families[family.name] = {
            "type": family.type,
            "unit": getattr(family, "unit", ""),
            "samples": [[s.name, dict(s.labels), s.value] for s in family.samples],
        }
    print(json.dumps({"status": status, "content_type": content_type, "families": families}))


if __name__ == "__main__":
    sys.exit(main())
