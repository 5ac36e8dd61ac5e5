"""Runs the examples of clients/python/README.md against a real Mandate and
checks the answers the README writes beside them.

The code is read from the README's ```python blocks, never copied: what runs
is what a reader sees. A line that is an expression followed by a comment
that starts with a Python literal (``d.reasons  # ['S3', 'S4']: …``) is
checked: the expression must equal that literal. A block may need names the
README leaves to the reader (``place_the_order``); the preludes below give
them, and the checks after a block say what must have happened.

Usage: python python_examples.py README.md CASES.json (MANDATE_URL set).
Prints one ``ok``/``not ok`` line per check and ``python: N passed, M failed``.
"""

from __future__ import annotations

import ast
import io
import json
import sys
import tokenize
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

passed = 0
failed = 0


def report(ok: bool, what: str, detail: str = "") -> None:
    global passed, failed
    if ok:
        passed += 1
        print(f"ok - {what}")
    else:
        failed += 1
        print(f"not ok - {what}" + (f"\n    {detail}" if detail else ""))


def blocks(readme: str) -> List[Tuple[str, int, str]]:
    """The README's ```python blocks: (the heading above, first line number, code)."""
    found = []
    heading = ""
    lines = readme.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            heading = line.lstrip("#").strip()
        if line.strip() == "```python":
            start = i + 1
            j = start
            while lines[j].strip() != "```":
                j += 1
            found.append((heading, start + 1, "\n".join(lines[start:j]) + "\n"))
            i = j
        i += 1
    return found


def literal_prefix(comment: str) -> Tuple[bool, Any]:
    """The longest start of ``comment`` that is a Python literal, if any."""
    text = comment.strip()
    for end in range(len(text), 0, -1):
        candidate = text[:end].strip()
        if candidate.endswith(","):  # `['a'], page after page` is a list, not a tuple
            continue
        try:
            return True, ast.literal_eval(candidate)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return False, None


class Checks(ast.NodeTransformer):
    """Turns ``expr  # literal …`` lines into ``__check(expr, literal, …)`` calls."""

    def __init__(self, comments: Dict[int, str], first_line: int) -> None:
        self.comments = comments
        self.first_line = first_line

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        if node.lineno != node.end_lineno or node.lineno not in self.comments:
            return node
        comment = self.comments[node.lineno]
        is_literal, _ = literal_prefix(comment)
        if not is_literal and isinstance(node.value, (ast.Call, ast.Constant)):
            return node  # `...  # runs only on an allow`: nothing to show
        source = ast.unparse(node.value)
        line = self.first_line + node.lineno - 1
        call = ast.Call(
            func=ast.Name("__check" if is_literal else "__show", ast.Load()),
            args=[node.value, ast.Constant(comment), ast.Constant(source), ast.Constant(line)],
            keywords=[],
        )
        return ast.copy_location(ast.Expr(call), node)


def instrument(code: str, first_line: int) -> ast.Module:
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string[1:]
    tree = ast.parse(code)
    checked = Checks(comments, first_line).visit(tree)
    assert isinstance(checked, ast.Module)
    return ast.fix_missing_locations(checked)


def check(value: Any, comment: str, source: str, line: int) -> None:
    _, expected = literal_prefix(comment)
    report(
        value == expected,
        f"README line {line}: {source} == {expected!r}",
        f"the server's answer is {value!r}",
    )


def show(value: Any, comment: str, source: str, line: int) -> None:
    print(f"# README line {line}: {source} = {value!r}  ({comment.strip()})")


def run(name: str, code: str, first_line: int, namespace: Dict[str, Any], wrap_async: bool) -> bool:
    try:
        if wrap_async:
            body = "".join("    " + line + "\n" for line in code.splitlines())
            code = "async def __example():\n" + body
            first_line -= 1
        tree = instrument(code, first_line)
        exec(compile(tree, f"README:{name}", "exec", dont_inherit=True), namespace)
        if wrap_async:
            import asyncio

            asyncio.run(namespace["__example"]())
    except Exception:  # every failure of an example is reported
        report(False, f"the example '{name}' runs", traceback.format_exc().replace("\n", "\n    "))
        return False
    report(True, f"the example '{name}' runs")
    return True


def main() -> int:
    readme_path, cases_path = sys.argv[1], sys.argv[2]
    with open(readme_path, encoding="utf-8") as f:
        readme = f.read()
    with open(cases_path, encoding="utf-8") as f:
        cases = json.load(f)
    examples = blocks(readme)

    namespace: Dict[str, Any] = {"__check": check, "__show": show}
    placed: List[bool] = []
    namespace["place_the_order"] = lambda: placed.append(True)

    # Each block: (its heading, a prelude, async?, what must hold after it).
    def after_guard() -> None:
        report(placed == [True], "Guard an action: carol's order was placed (allowed is True)")

    def after_fastapi() -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Starlette's advice on its test client's HTTP library
            from fastapi.testclient import TestClient

        app = namespace["app"]
        path = "/accounts/alice-personal/orders?side=buy&instrument=AAPL"
        with TestClient(app) as http:
            allowed = http.post(path, headers={"x-user": "carol"})
            denied = http.post(path, headers={"x-user": "bob"})
            nobody = http.post(path)
        report(
            allowed.status_code == 200,
            "FastAPI: carol places an order: 200",
            f"{allowed.status_code} {allowed.text}",
        )
        report(
            denied.status_code == 403,
            "FastAPI: bob, a viewer, is refused: 403",
            f"{denied.status_code} {denied.text}",
        )
        report(
            nobody.status_code == 422,
            "FastAPI: no x-user header: FastAPI's 422",
            f"{nobody.status_code}",
        )

    withdrawal = cases["decisions"][3]["request"]
    assert withdrawal["subject"]["id"] == "erin" and withdrawal["action"]["name"] == "withdraw"
    plan: List[Tuple[str, Optional[Callable[[], None]], bool, Optional[Callable[[], None]]]] = [
        ("Guard an action", None, False, after_guard),
        ("Guard an action", None, False, None),  # the on_error hook: built, not called
        ("The decision and why", None, False, None),
        ("A batch", lambda: namespace.update(mandate=namespace["Client"]()), False, None),
        ("Search", None, False, None),
        (
            "async",
            lambda: namespace.update(
                subject=withdrawal["subject"],
                account=withdrawal["resource"],
                context=withdrawal["context"],
            ),
            True,
            None,
        ),
        ("FastAPI", None, False, after_fastapi),
        ("Settings", None, False, None),
    ]
    headings = [h for h, _, _ in examples]
    report(
        headings == [p[0] for p in plan],
        "the README's python blocks are the ones this script knows",
        f"the README has {headings}: update the plan in {__file__}",
    )
    for index, (heading, first_line, code) in enumerate(examples):
        if index >= len(plan) or plan[index][0] != heading:
            continue  # reported above: a block this script does not know is not run blind
        _, prelude, wrap_async, after = plan[index]
        if prelude is not None:
            prelude()
        if run(heading, code, first_line, namespace, wrap_async) and after is not None:
            try:
                after()
            except Exception:  # likewise
                report(False, f"after '{heading}'", traceback.format_exc().replace("\n", "\n    "))
    print(f"python: {passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
