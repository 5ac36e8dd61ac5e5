#!/usr/bin/env python3
"""Makes a Mandate pack for the AuthZEN API-gateway interop from its two data files.

    python3 examples/authzen-gateway/convert.py USERS.json ROUTES.json OUT_DIR
    mandate serve --config OUT_DIR/mandate.toml

USERS.json maps each identity's id (the JWT `sub` a gateway sends as
`subject.id`) to {"id", "name", "email", "roles"}; ROUTES.json is a list of
{"method", "route", "permission"}: the application's route table. OUT_DIR
gets `mandate.toml`, `schema.cedarschema`, `entities.json` and `policies/`
(this pack's rules, copied). Another application is only another
ROUTES.json: each route becomes a `gateway.routes` entry naming its
permission as the Cedar action, and each permission an action of the schema
(one no rule names is denied to everyone). Standard library only.
"""

import json
import os
import re
import shutil
import sys

NAMESPACE = "Gateway"
# The permissions the rules name (policies/gateway.cedar): always declared,
# so the rules validate whatever ROUTES.json lists.
RULED = ["can_read_user", "can_read_todos", "can_create_todo", "can_update_todo", "can_delete_todo"]
# What Mandate's route table accepts: `/`, then literal segments and whole
# `{name}` parameters.
SEGMENT = re.compile(r"^(\{[^{}/]+\}|[^{}/]+)$")


def warn(message):
    sys.stderr.write(f"convert.py: {message}\n")


def cedar_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_string(text):
    return json.dumps(text, ensure_ascii=False)


def usable_route(route):
    """Whether Mandate's route table accepts this route's method and path."""
    method, path = route.get("method"), route.get("route")
    if not isinstance(method, str) or not re.fullmatch(r"[A-Za-z]+|\*", method):
        return False
    if not isinstance(path, str) or not path.startswith("/"):
        return False
    segments = [s for s in path.split("/") if s]
    return all(SEGMENT.match(s) for s in segments) and isinstance(route.get("permission"), str)


def identity(sub, user):
    roles = user.get("roles") or []
    if isinstance(roles, str):
        roles = [roles]
    attrs = {"roles": sorted({str(r) for r in roles})}
    for key in ("name", "email"):
        if isinstance(user.get(key), str):
            attrs[key] = user[key]
    return {"uid": {"type": f"{NAMESPACE}::Identity", "id": str(sub)}, "attrs": attrs, "parents": []}


def schema(permissions):
    lines = [
        "// Made by convert.py from the interop's users and routes files.",
        f"namespace {NAMESPACE} {{",
        "  // An identity, keyed by the `sub` of its token (what a gateway sends",
        "  // as `subject.id`).",
        "  entity Identity {",
        "    name?: String,",
        "    email?: String,",
        "    roles: Set<String>,",
        "  };",
        "",
        "  // A route of the application; its id is the path (the template, for",
        "  // a question about the route itself). Described by the request alone.",
        "  entity Route;",
        "",
        "  // Each permission a route names.",
    ]
    for permission in permissions:
        lines.append(
            f"  action {cedar_string(permission)} appliesTo {{ principal: Identity, resource: Route }};"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def config(routes):
    lines = [
        "# Made by convert.py from the interop's users and routes files:",
        "#   mandate serve --config mandate.toml",
        "# Paths here are relative to this file.",
        "",
        "[policy]",
        'dir = "policies"',
        'schema = "schema.cedarschema"',
        "# `identity` resolves here.",
        f'default_namespace = "{NAMESPACE}"',
        "",
        "[store]",
        'kind = "file"',
        'entities = "entities.json"',
        "",
        "# A route has no data: the request names it.",
        "[entities.sources]",
        f'"{NAMESPACE}::Route" = "request"',
        "",
        "[gateway]",
        "# An AuthZEN evaluation of a `route` resource asks about a route:",
        "# `action.name` is the method, `resource.id` the route's template.",
        'route_type = "route"',
        'principal_type = "Identity"',
        "# The same table serves nginx's auth_request at /gateway/authorize, with",
        "# the identity in `x-user-id` (set by the gateway from the verified token).",
        'original = "x-original"',
        'principal_header = "x-user-id"',
        "unmatched_status = 403",
    ]
    for route in routes:
        lines += [
            "",
            "[[gateway.routes]]",
            f"method = {toml_string(route['method'].upper())}",
            f"path = {toml_string(route['route'])}",
            f"action = {toml_string(route['permission'])}",
            'resource_type = "Route"',
            f"resource_id = {toml_string(route['route'])}",
        ]
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    users_file, routes_file, out = argv[1:]
    with open(users_file, encoding="utf-8") as f:
        users = json.load(f)
    with open(routes_file, encoding="utf-8") as f:
        listed = json.load(f)
    if not isinstance(users, dict) or not isinstance(listed, list):
        sys.stderr.write("USERS.json must map ids to users, ROUTES.json be a list of routes\n")
        return 2

    routes, seen = [], set()
    for route in listed:
        if not isinstance(route, dict) or not usable_route(route):
            warn(f"skipped (every question about it is denied): {json.dumps(route)}")
            continue
        key = (route["method"].upper(), route["route"])
        if key in seen:
            warn(f"`{key[0]} {key[1]}` is listed again: the first one decides")
        seen.add(key)
        routes.append(route)
    permissions = list(RULED)
    for route in routes:
        if route["permission"] not in permissions:
            permissions.append(route["permission"])

    os.makedirs(os.path.join(out, "policies"), exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    source = os.path.join(here, "policies")
    target = os.path.join(out, "policies")
    if os.path.realpath(source) != os.path.realpath(target):
        for name in sorted(os.listdir(source)):
            if name.endswith(".cedar"):
                shutil.copyfile(os.path.join(source, name), os.path.join(target, name))
    entities = [identity(sub, user) for sub, user in users.items() if isinstance(user, dict)]
    with open(os.path.join(out, "entities.json"), "w", encoding="utf-8") as f:
        json.dump(entities, f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(out, "schema.cedarschema"), "w", encoding="utf-8") as f:
        f.write(schema(permissions))
    with open(os.path.join(out, "mandate.toml"), "w", encoding="utf-8") as f:
        f.write(config(routes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
