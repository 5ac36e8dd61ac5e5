#!/usr/bin/env python3
"""Checks one rendering of the Mandate chart.

    validate.py CASE RENDERED.yaml [--serve MANDATE_BINARY]

Every manifest is validated strictly (unknown fields fail) against the
Kubernetes API schemas of the oldest version the chart supports and the
newest kubernetes-validate knows, through its Python API; ServiceMonitor
against tests/helm/crds/servicemonitor.schema.json. Then what CASE switched
on is checked to be there (and what it did not, absent), the pod is checked
for what the chart promises (non-root, read-only root, probes, unique port
names, every mount backed by a volume, the config checksum), and with
--serve the rendered mandate.json, policies and entities are given to the
real server, which must answer decisions with them.

Prints one line per check and `N passed, N failed`; exits 1 on a failure.
"""
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import jsonschema
import kubernetes_validate
import yaml

HERE = pathlib.Path(__file__).resolve().parent
OLDEST, NEWEST = "1.25.0", kubernetes_validate.utils.latest_version()
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.schema.json"}

passed, failed = 0, 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok    {name}")
    else:
        failed += 1
        print(f"FAIL  {name}{': ' + str(detail) if detail else ''}")
    return ok


def validate_strictly(doc):
    """Kubernetes' own schemas for core kinds; ours for CRDs."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRDS:
        schema = json.loads((HERE / "crds" / CRDS[key]).read_text())
        jsonschema.validate(doc, schema)
        # Its metadata is an ObjectMeta like any other object's.
        doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
    for version in (OLDEST, NEWEST):
        kubernetes_validate.validate(doc, version, strict=True)


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def pod_checks(docs, deployment, mandate_container="mandate"):
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    containers = {c["name"]: c for c in spec["containers"]}
    mandate = containers.get(mandate_container)
    if not check(f"{name}: has the mandate container", mandate is not None, list(containers)):
        return None
    ports = [p["name"] for c in spec["containers"] for p in c.get("ports", [])]
    check(f"{name}: port names unique in the pod and at most 15 characters",
          len(ports) == len(set(ports)) and all(len(p) <= 15 for p in ports), ports)
    sc = mandate.get("securityContext", {})
    pod_sc = spec.get("securityContext", {})
    check(f"{name}: mandate runs as non-root",
          sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
          and sc.get("runAsUser", pod_sc.get("runAsUser", 0)) != 0, (sc, pod_sc))
    check(f"{name}: read-only root filesystem, no privilege escalation, no capabilities",
          sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
          and sc.get("capabilities", {}).get("drop") == ["ALL"], sc)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = mandate.get("volumeMounts", [])
    check(f"{name}: every mount is backed by a volume",
          all(m["name"] in volumes for m in mounts), [m["name"] for m in mounts])
    configmaps = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}
    config_volume = volumes.get("mandate-config", {}).get("configMap", {}).get("name")
    config_map = configmaps.get(config_volume)
    if not check(f"{name}: mandate.json comes from a rendered ConfigMap", config_map is not None, config_volume):
        return None
    text = config_map["data"]["mandate.json"]
    config = json.loads(text)
    annotations = pod["metadata"].get("annotations", {})
    checksum = next((v for k, v in annotations.items() if k.startswith("checksum/") and "config" in k), None)
    check(f"{name}: the pod's config checksum is the ConfigMap's",
          checksum == hashlib.sha256(text.rstrip("\n").encode()).hexdigest(), checksum)
    mount_paths = {m["mountPath"] for m in mounts}
    paths = [config["policy"]["dir"], config["policy"]["schema"]]
    paths += [config["store"][k] for k in ("entities", "upstream_ca") if k in config["store"]]
    paths += [config.get("tls", {}).get(k) for k in ("cert", "key", "client_ca") if k in config.get("tls", {})]
    check(f"{name}: every path mandate.json names is under a mount",
          all(any(p == m or p.startswith(m + "/") for m in mount_paths) for p in paths), (paths, mount_paths))
    probes = [mandate.get("livenessProbe", {}), mandate.get("readinessProbe", {})]
    mutual = "client_ca" in config.get("tls", {})
    if mutual:
        check(f"{name}: with mutual TLS the probes check the admin port accepts",
              all(p.get("tcpSocket", {}).get("port") == "mandate-admin" for p in probes), probes)
    else:
        scheme = "HTTPS" if "tls" in config else "HTTP"
        check(f"{name}: liveness /healthz and readiness /readyz on the admin port over {scheme}",
              [p.get("httpGet", {}).get("path") for p in probes] == ["/healthz", "/readyz"]
              and all(p["httpGet"]["port"] == "mandate-admin" and p["httpGet"]["scheme"] == scheme for p in probes),
              probes)
    return {"config": config, "mandate": mandate, "volumes": volumes, "configmaps": configmaps}


def expect_kinds(docs, wanted):
    kinds = {d["kind"] for d in docs}
    for kind, present in wanted.items():
        check(f"{kind} {'rendered' if present else 'not rendered'}", (kind in kinds) == present, sorted(kinds))


OPTIONAL = ["PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceMonitor"]


def case_checks(case, docs):
    deployments = by_kind(docs, "Deployment")
    if case == "sidecar":
        check("one Deployment: the application's", len(deployments) == 1
              and deployments[0]["metadata"]["name"].endswith("trading-api"), [d["metadata"]["name"] for d in deployments])
        expect_kinds(docs, {"Service": True, **{k: False for k in OPTIONAL}})
        pod = pod_checks(docs, deployments[0])
        if pod:
            names = [c["name"] for c in deployments[0]["spec"]["template"]["spec"]["containers"]]
            check("the app and mandate share the pod", names == ["trading-api", "mandate"], names)
            check("the sidecar listens on loopback only", pod["config"]["server"]["listen"].startswith("127.0.0.1:"),
                  pod["config"]["server"])
            env = {e["name"]: e for e in pod["mandate"].get("env", [])}
            check("the store token comes from a Secret",
                  env.get("MANDATE_STORE_UPSTREAM_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {}).get("name")
                  == "entity-store-token", env)
            check("the parent's config keys reach mandate.json", pod["config"]["cache"]["ttl"] == "10s"
                  and pod["config"]["log"]["mask"] == ["amount"], pod["config"])
            check("the policies ConfigMap the sidecar mounts is rendered",
                  pod["volumes"]["mandate-policies"]["configMap"]["name"] in pod["configmaps"])
        return
    if not check("one Deployment", len(deployments) == 1, len(deployments)):
        return
    deployment = deployments[0]
    pod = pod_checks(docs, deployment)
    if not pod:
        return
    config, on = pod["config"], set(case.split("+"))
    if "all" in on:
        on |= {"tls", "pdb", "hpa", "servicemonitor", "dashboard"}
    expect_kinds(docs, {"Service": True, "ServiceAccount": True,
                        "PodDisruptionBudget": "pdb" in on,
                        "HorizontalPodAutoscaler": "hpa" in on,
                        "ServiceMonitor": "servicemonitor" in on})
    check("replicas " + ("left to the HPA" if "hpa" in on else "set"),
          ("replicas" in deployment["spec"]) == ("hpa" not in on), deployment["spec"].get("replicas"))
    dashboards = [c for c in by_kind(docs, "ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    check("dashboard ConfigMap " + ("rendered" if "dashboard" in on else "not rendered"),
          len(dashboards) == (1 if "dashboard" in on else 0), len(dashboards))
    if dashboards:
        board = json.loads(dashboards[0]["data"]["mandate.json"])
        check("the dashboard is the shipped one", board.get("title", "").lower().startswith("mandate"), board.get("title"))
    if "tls" in on:
        secret = pod["volumes"].get("mandate-tls", {}).get("secret", {}).get("secretName")
        check("TLS: the default Secret <fullname>-tls is mounted and configured",
              secret == deployment["metadata"]["name"] + "-tls" and config.get("tls", {}).get("cert") == "/etc/mandate/tls/tls.crt",
              (secret, config.get("tls")))
    else:
        check("no TLS", "tls" not in config, config.get("tls"))
    if "servicemonitor" in on:
        sm = by_kind(docs, "ServiceMonitor")[0]
        service = by_kind(docs, "Service")[0]
        endpoint = sm["spec"]["endpoints"][0]
        check("the ServiceMonitor scrapes /metrics on a port the Service names",
              endpoint["path"] == "/metrics" and endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
              and endpoint["scheme"] == ("https" if "tls" in on else "http"), endpoint)
    if "http" in on:
        env = {e["name"]: e for e in pod["mandate"].get("env", [])}
        check("the upstream store: URL, CA from a Secret, token from a Secret",
              config["store"] == {"kind": "http", "upstream": "https://store.example:8443",
                                  "upstream_ca": "/etc/mandate/store-ca/ca.crt"}
              and pod["volumes"]["mandate-store-ca"]["secret"]["secretName"] == "store-ca"
              and env["MANDATE_STORE_UPSTREAM_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "store-token",
              (config["store"], env))
    if "bus" in on:
        check("the bus: URL, subject, credentials and CA from Secrets, ttl_without_bus",
              config["bus"] == {"url": "tls://nats.messaging:4222", "subject": "prod.mandate.entities.changed",
                                "credentials_file": "/etc/mandate/nats-creds/mandate.creds",
                                "tls_ca": "/etc/mandate/nats-ca/ca.crt"}
              and config["cache"]["ttl_without_bus"] == "2s" and config["cache"]["ttl"] == "30s"
              and pod["volumes"]["mandate-nats-creds"]["secret"]["secretName"] == "nats-creds"
              and pod["volumes"]["mandate-nats-ca"]["secret"]["secretName"] == "nats-ca",
              (config.get("bus"), config.get("cache")))
    else:
        check("no bus unless asked", "bus" not in config, config.get("bus"))
    if "mtls" in on:
        check("mutual TLS: client CA from <fullname>-client-ca",
              pod["volumes"]["mandate-client-ca"]["secret"]["secretName"] == deployment["metadata"]["name"] + "-client-ca"
              and config["tls"]["client_ca"] == "/etc/mandate/client-ca/ca.crt", config.get("tls"))
    if "routes" in on:
        check("the gateway route table reaches mandate.json with integer statuses",
              len(config["gateway"]["routes"]) == 2 and config["gateway"]["unmatched_status"] == 403
              and config["gateway"]["original"] == "x-original" and config["gateway"]["trusted_headers"] == ["x-mfa"]
              and config["gateway"]["grpc_listen"].endswith(":8181"), config["gateway"])


def serve(docs, binary):
    """Runs the real server on what the chart rendered (paths re-rooted)."""
    configmaps = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}
    deployment = by_kind(docs, "Deployment")[0]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    with tempfile.TemporaryDirectory() as root:
        for mount in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]:
            source = volumes[mount["name"]].get("configMap", {}).get("name")
            target = pathlib.Path(root + mount["mountPath"])
            target.mkdir(parents=True)
            for key, value in configmaps[source]["data"].items():
                (target / key).write_text(value)
        config_file = pathlib.Path(root + "/etc/mandate/config/mandate.json")
        config_file.write_text(config_file.read_text().replace("/etc/mandate/", root + "/etc/mandate/"))
        env = dict(os.environ, MANDATE_GATEWAY_GRPC_LISTEN="127.0.0.1:0", MANDATE_LOG_DECISIONS="off")
        process = subprocess.Popen(
            [binary, "serve", "--config", str(config_file), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        try:
            line = ""
            for line in process.stderr:
                if "mandate listening on" in line:
                    break
            # Keep reading, so the process log never fills the pipe.
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            match = re.search(r"listening on (http://\S+)", line)
            if not check("the server starts on the rendered config, policies and entities", match, line):
                return
            base = match.group(1)

            def decide(subject, action, resource):
                body = json.dumps({"subject": {"type": "user", "id": subject}, "action": {"name": action},
                                   "resource": resource}).encode()
                request = urllib.request.Request(base + "/access/v1/evaluation", body, {"content-type": "application/json"})
                with urllib.request.urlopen(request, timeout=5) as reply:
                    return json.load(reply)["decision"]

            check("it allows what the pack allows (alice views her market data)",
                  decide("alice", "view_market_data", {"type": "marketdata", "id": "nasdaq-l1"}) is True)
            check("it denies what the pack denies (bob closes alice's account)",
                  decide("bob", "close_account", {"type": "account", "id": "alice-personal"}) is False)
        finally:
            process.terminate()
            process.wait(timeout=10)


def main():
    case, rendered = sys.argv[1], sys.argv[2]
    binary = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--serve" else None
    docs = [d for d in yaml.safe_load_all(pathlib.Path(rendered).read_text()) if d]
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            validate_strictly(doc)
            check(f"{name} valid (Kubernetes {OLDEST} and {NEWEST}, strict)", True)
        except Exception as error:  # every validation error is a failure, with its message
            check(f"{name} valid", False, getattr(error, "message", error))
    case_checks(case, docs)
    if binary:
        serve(docs, binary)
    print(f"{case}: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
