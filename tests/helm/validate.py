#!/usr/bin/env python3
"""Checks one rendering of the Mandate chart.

    validate.py CASE RENDERED.yaml [--kube VERSION] [--serve MANDATE_BINARY]

Every manifest is validated strictly (unknown fields fail) against the
Kubernetes API schemas of 1.25 and the newest kubernetes-validate knows,
through its Python API, or with --kube against that version's alone (a
rendering for Kubernetes 1.20 is checked with an older kubernetes-validate
on PYTHONPATH, since the current one starts at 1.25); ServiceMonitor against
tests/helm/crds/servicemonitor.schema.json. Then what CASE switched
on is checked to be there (and what it did not, absent), the pod is checked
for what the chart promises (non-root, read-only root, probes, unique port
names, every mount backed by a volume, the config checksum), and with
--serve the rendered mandate.json, policies and entities are given to the
real server, which must answer decisions with them.

Prints one line per check and `N passed, N failed`; exits 1 on a failure.
"""
import base64
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
VERSIONS = [OLDEST, NEWEST]
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
    for version in VERSIONS:
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
    check(f"{name}: enableServiceLinks: false (no MANDATE_… variables from Services)",
          spec.get("enableServiceLinks") is False, spec.get("enableServiceLinks"))
    env = {e["name"]: e for e in mandate.get("env", [])}
    ref = env.get("MANDATE_SEARCH_TOKEN_KEY", {}).get("valueFrom", {}).get("secretKeyRef", {})
    check(f"{name}: search.token_key from a Secret via secretKeyRef",
          set(env.get("MANDATE_SEARCH_TOKEN_KEY", {})) == {"name", "valueFrom"} and ref.get("name") and ref.get("key"),
          env.get("MANDATE_SEARCH_TOKEN_KEY"))
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


def token_key_checks(docs, pod, fullname, existing):
    """The search key's Secret: the chart's (random, kept by lookup) or the one named."""
    env = {e["name"]: e for e in pod["mandate"]["env"]}
    ref = env["MANDATE_SEARCH_TOKEN_KEY"]["valueFrom"]["secretKeyRef"]
    secrets = {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}
    if existing:
        check("search.tokenKeySecret names an existing Secret: used, none rendered",
              ref == {"name": existing[0], "key": existing[1]} and not secrets, (ref, list(secrets)))
        return
    secret = secrets.get(f"{fullname}-search-token-key", {})
    value = secret.get("data", {}).get(ref["key"], "")
    try:
        key = base64.b64decode(value, validate=True).decode()
    except ValueError:
        key = ""
    check("the chart's Secret <fullname>-search-token-key holds a random 64-character key",
          ref["name"] == secret.get("metadata", {}).get("name") and re.fullmatch(r"[A-Za-z0-9]{64}", key),
          (ref, secret.get("metadata", {}).get("name"), len(key)))
    template = (HERE.parent.parent / "helm/mandate/templates/secret-search-token-key.yaml").read_text()
    check("the Secret's key is read back with lookup, so an upgrade keeps it",
          f'lookup "v1" "Secret" .Release.Namespace $name' in template and "index $existing.data $key" in template)


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
            check("the search key comes from the mandate chart's Secret",
                  env["MANDATE_SEARCH_TOKEN_KEY"]["valueFrom"]["secretKeyRef"]["name"]
                  in {d["metadata"]["name"] for d in by_kind(docs, "Secret")}, env.get("MANDATE_SEARCH_TOKEN_KEY"))
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
    token_key_checks(docs, pod, deployment["metadata"]["name"],
                     ("search-key", "page-tokens") if "tokenkey" in on else None)
    old = "kube1.20" in on
    wanted = {"PodDisruptionBudget": "policy/v1beta1" if old else "policy/v1",
              "HorizontalPodAutoscaler": "autoscaling/v2beta2" if old else "autoscaling/v2"}
    for kind, api in wanted.items():
        for doc in by_kind(docs, kind):
            check(f"{kind} as {api} (Kubernetes {'1.20' if old else 'current'})", doc["apiVersion"] == api,
                  doc["apiVersion"])
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
    if "admin" in on:
        env = {e["name"]: e for e in pod["mandate"].get("env", [])}
        check("the admin token from its Secret via secretKeyRef",
              env.get("MANDATE_ADMIN_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
              == {"name": "mandate-admin", "key": "admin-token"}, env.get("MANDATE_ADMIN_TOKEN"))
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


def serve(docs, binary, env=None, title="the rendered config, policies and entities"):
    """Runs the real server on what the chart rendered (paths re-rooted):
    with the caller's environment, or with exactly `env` (a pod's)."""
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
        env = dict(os.environ if env is None else env, MANDATE_GATEWAY_GRPC_LISTEN="127.0.0.1:0",
                   MANDATE_LOG_DECISIONS="off")
        process = subprocess.Popen(
            [binary, "serve", "--config", str(config_file), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        try:
            lines = []
            for line in process.stderr:
                lines.append(line)
                if "mandate admin listening on" in line:
                    break
            # Keep reading, so the process log never fills the pipe.
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            text = "".join(lines)
            match = re.search(r"mandate listening on (http://\S+)", text)
            admin = re.search(r"admin listening on (http://\S+)", text)
            if not check(f"the server starts on {title}", match and admin,
                         text.strip() or f"exit status {process.wait(timeout=10)}"):
                return
            base = match.group(1)
            deadline = time.monotonic() + 10
            status = None
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(admin.group(1) + "/readyz", timeout=2) as reply:
                        status = reply.status
                        break
                except OSError as error:
                    status = error
                    time.sleep(0.1)
            check("it becomes ready (/readyz 200)", status == 200, status)

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
    case, rendered, options = sys.argv[1], sys.argv[2], sys.argv[3:]
    binary = options[options.index("--serve") + 1] if "--serve" in options else None
    if "--kube" in options:
        VERSIONS[:] = [options[options.index("--kube") + 1]]
    docs = [d for d in yaml.safe_load_all(pathlib.Path(rendered).read_text()) if d]
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            validate_strictly(doc)
            check(f"{name} valid (Kubernetes {' and '.join(VERSIONS)}, strict)", True)
        except Exception as error:  # every validation error is a failure, with its message
            check(f"{name} valid", False, getattr(error, "message", error))
    case_checks(case, docs)
    if binary:
        serve(docs, binary)
    print(f"{case}: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
