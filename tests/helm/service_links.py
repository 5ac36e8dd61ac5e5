#!/usr/bin/env python3
"""Starts Mandate with the environment a kubelet gives its container.

    service_links.py MANDATE_BINARY POD.yaml [SERVICES.yaml ...]

POD.yaml is a rendering of the chart whose Deployment runs; every Service in
it and in the other renderings is taken to be in the pod's namespace. From
them this computes the service-link variables Kubernetes injects into a pod
when `enableServiceLinks` is on (its default), by the rules of the kubelet's
pkg/kubelet/envvars (documented under "Discovering services: environment
variables"): for each Service with a cluster IP, its name upper-cased with
`-` as `_`, then
    <N>_SERVICE_HOST=<ip>  <N>_SERVICE_PORT=<first port>
    <N>_SERVICE_PORT_<PORT NAME>=<port>             for each named port
    <N>_PORT=<proto>://<ip>:<first port>
    <N>_PORT_<port>_<PROTO>=<proto>://<ip>:<port>   for each port, with
    …_PROTO=<proto>  …_PORT=<port>  …_ADDR=<ip>
plus the API server's own `kubernetes` Service (every pod gets it). Cluster
IPs are made up (10.96.0.x, never contacted). The chart turns service links
off, so this is the environment of a pod where someone turned them back on,
or of an older chart: the server must start, become ready and decide. The
container's own env from the Deployment is added, Secrets resolved from the
rendering (or a stand-in value for a Secret the chart does not render).
"""
import base64
import pathlib
import sys

import yaml

import validate
from validate import by_kind, check


def env_name(name):
    return name.upper().replace("-", "_")


def service_links(services):
    env = {}
    for number, service in enumerate(services, start=1):
        spec = service["spec"]
        ip = spec.get("clusterIP", f"10.96.0.{number}")
        if ip == "None" or spec.get("type") == "ExternalName":
            continue
        n, ports = env_name(service["metadata"]["name"]), spec["ports"]
        env[f"{n}_SERVICE_HOST"] = ip
        env[f"{n}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{n}_SERVICE_PORT_{env_name(port['name'])}"] = str(port["port"])
        for i, port in enumerate(ports):
            proto = port.get("protocol", "TCP")
            url = f"{proto.lower()}://{ip}:{port['port']}"
            prefix = f"{n}_PORT_{port['port']}_{proto.upper()}"
            if i == 0:
                env[f"{n}_PORT"] = url
            env[prefix] = url
            env[f"{prefix}_PROTO"] = proto.lower()
            env[f"{prefix}_PORT"] = str(port["port"])
            env[f"{prefix}_ADDR"] = ip
    return env


def container_env(docs, container):
    """The container's env as the kubelet resolves it."""
    secrets = {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        data = secrets.get(ref["name"], {}).get("data", {})
        env[var["name"]] = (base64.b64decode(data[ref["key"]]).decode() if ref["key"] in data
                            else f"stand-in-{ref['name']}-{ref['key']}")
    return env


def main():
    binary, pod_file, others = sys.argv[1], sys.argv[2], sys.argv[3:]
    docs = [d for d in yaml.safe_load_all(pathlib.Path(pod_file).read_text()) if d]
    services = [s for f in [pod_file, *others]
                for s in by_kind([d for d in yaml.safe_load_all(pathlib.Path(f).read_text()) if d], "Service")]
    # The API server's Service, in the default namespace: every pod has it.
    services.append({"metadata": {"name": "kubernetes"},
                     "spec": {"clusterIP": "10.96.0.254", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}})
    # Each Service its own made-up cluster IP.
    for number, service in enumerate(services, start=1):
        service["spec"].setdefault("clusterIP", f"10.96.0.{number}")
    links = service_links(services)
    names = [s["metadata"]["name"] for s in services]
    mandate_vars = sorted(k for k in links if k.startswith("MANDATE"))
    check(f"service links computed for {', '.join(names)}: {len(links)} variables, "
          f"{len(mandate_vars)} named MANDATE…", len(mandate_vars) > 0, links)
    for name in mandate_vars:
        print(f"      {name}={links[name]}")
    deployment = by_kind(docs, "Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    own = container_env(docs, container)
    clash = set(own) & set(links)
    check("the chart's own env and the service links do not overlap", not clash, clash)
    # Only what a container has: PATH and HOME from the image, nothing of ours.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", **links, **own}
    validate.serve(docs, binary, env, f"the rendered config with {len(links)} service-link variables and the pod's env")
    print(f"service links: {validate.passed} passed, {validate.failed} failed")
    sys.exit(1 if validate.failed else 0)


if __name__ == "__main__":
    main()
