#!/usr/bin/env python3
"""Converts the AuthZEN search interop data to Cedar entities for Mandate.

    python3 examples/authzen-search/convert.py USERS.json RECORDS.json > entities.json

USERS.json is a list of {"id", "role", "department"}; RECORDS.json a list of
{"id", "title", "department", "owner"} (ids may be numbers: they become
strings, as AuthZEN ids are). Standard library only.
"""

import json
import sys


def user(item):
    return {
        "uid": {"type": "Search::User", "id": str(item["id"])},
        "attrs": {"role": str(item["role"]), "department": str(item["department"])},
        "parents": [],
    }


def record(item):
    return {
        "uid": {"type": "Search::Record", "id": str(item["id"])},
        "attrs": {
            "title": str(item.get("title", "")),
            "department": str(item["department"]),
            "owner": {"__entity": {"type": "Search::User", "id": str(item["owner"])}},
        },
        "parents": [],
    }


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    with open(argv[1], encoding="utf-8") as users, open(argv[2], encoding="utf-8") as records:
        entities = [user(u) for u in json.load(users)] + [record(r) for r in json.load(records)]
    json.dump(entities, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
