#!/usr/bin/env python3
"""The requests tests/k8s/run.sh makes of Mandate in the cluster.

    check.py decide BASE                      an allow and a deny through BASE
    check.py page-across BASE_A BASE_B FILE   page 1 at A, page 2 at B with A's token (kept in FILE)
    check.py page-again BASE FILE             page 2 at BASE with the token kept in FILE

BASE is http://<address>:8180: the Service's cluster IP or one pod's IP.
Prints one `ok`/`FAIL` line per check; exits 1 on a failure.
"""
import ipaddress
import json
import pathlib
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

failed = 0

# Who may withdraw 500.00 from Alice's account to her bank (the demo data: five users).
SEARCH = {"subject": {"type": "user"}, "action": {"name": "withdraw"},
          "resource": {"type": "account", "id": "alice-personal"},
          "context": {"destination": {"type": "Brokerage::Destination", "id": "alice-bank"}, "amount": "500.00"}}


def check(name, ok, detail=""):
    global failed
    print(f"{'ok  ' if ok else 'FAIL'}  {name}{'' if ok else ': ' + str(detail)}")
    failed += 0 if ok else 1
    return ok


# The only addresses a request may go to: the cluster's own, inside this machine.
ALLOWED = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "172.17.0.0/16", "10.96.0.0/16")]


def post(url, body):
    host = urllib.parse.urlsplit(url).hostname
    try:
        allowed = any(ipaddress.ip_address(host) in net for net in ALLOWED)
    except ValueError:
        allowed = False
    if not allowed:
        return 0, {"refused": f"{host} is not a cluster or loopback address"}
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    # A connection refused or reset is retried for up to 10 s (kube-proxy's
    # rules may trail the endpoints); an HTTP answer is final.
    for _ in range(20):
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return reply.status, json.load(reply)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")
        except OSError as error:
            failure = error
            time.sleep(0.5)
    return 0, {"unreachable": str(failure)}


def decide(base, subject, action, resource):
    status, body = post(base + "/access/v1/evaluation", {"subject": {"type": "user", "id": subject},
                                                         "action": {"name": action}, "resource": resource})
    return body.get("decision") if status == 200 else (status, body)


def search(base, page):
    return post(base + "/access/v1/search/subject", {**SEARCH, "page": page})


def ids(body):
    return [r["id"] for r in body.get("results", [])]


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "decide":
        base = args[0]
        allow = decide(base, "alice", "view_market_data", {"type": "marketdata", "id": "nasdaq-l1"})
        check(f"{base}: alice may view nasdaq-l1 market data (allow)", allow is True, allow)
        deny = decide(base, "bob", "close_account", {"type": "account", "id": "alice-personal"})
        check(f"{base}: bob may not close alice's account (deny)", deny is False, deny)
    elif command == "page-across":
        first, second, keep = args
        status, whole = search(first, {})
        check(f"{first}: the whole answer has more than one page of one", status == 200 and len(ids(whole)) > 1,
              (status, whole))
        status, page1 = search(first, {"limit": 1})
        token = page1.get("page", {}).get("next_token", "")
        check(f"{first}: page 1 is the first result, with a next_token", status == 200 and token
              and ids(page1) == ids(whole)[:1], (status, page1))
        pathlib.Path(keep).write_text(json.dumps({"token": token, "expect": ids(whole)[1:2]}))
        status, page2 = search(second, {"limit": 1, "token": token})
        check(f"{second}: page 2 with page 1's token from the other pod is the second result",
              status == 200 and ids(page2) == ids(whole)[1:2], (status, page2))
    elif command == "page-again":
        base, keep = args
        kept = json.loads(pathlib.Path(keep).read_text())
        status, page2 = search(base, {"limit": 1, "token": kept["token"]})
        check(f"{base}: the kept token still gives page 2", status == 200 and ids(page2) == kept["expect"],
              (status, page2))
    else:
        sys.exit(f"unknown command {command}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
