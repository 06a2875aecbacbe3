#!/usr/bin/env python3
"""The CLI's size budget (CONTRIBUTING.md): no tools/tessera/cmd_*.cpp over 400 lines, no function
in tools/ over 60 lines, and no textually included .inc source. Exits 1 naming each violation.

Functions are found by brace matching from a line that opens a top-level (or namespace-level)
definition, so a lambda counts toward the function that holds it."""
import pathlib
import re
import sys

MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
root = pathlib.Path(__file__).resolve().parent.parent
tools = root / "tools"
problems = []

for inc in tools.rglob("*.inc"):
    problems.append(f"{inc.relative_to(root)}: .inc sources are not allowed; make it a .cpp")

definition = re.compile(r"^(?:[A-Za-z_][\w:<>,&*\s]*\s)?[~\w:]+\s*\([^;]*$")
for path in sorted(tools.rglob("*.cpp")):
    lines = path.read_text().splitlines()
    rel = path.relative_to(root)
    if path.name.startswith("cmd_") and len(lines) > MAX_FILE_LINES:
        problems.append(f"{rel}: {len(lines)} lines (budget {MAX_FILE_LINES})")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line and not line[0].isspace() and definition.match(line) and not line.startswith(
            ("namespace", "struct", "class", "using", "#", "//", "}")):
            # Find the opening brace of the body, then its match.
            j, depth, opened = i, 0, False
            while j < len(lines):
                code = re.sub(r'"(\\.|[^"\\])*"|//.*', "", lines[j])
                if ";" in code and not opened and "{" not in code:
                    break  # a declaration
                depth += code.count("{") - code.count("}")
                opened = opened or "{" in code
                if opened and depth <= 0:
                    length = j - i + 1
                    if length > MAX_FUNCTION_LINES:
                        name = line.split("(")[0].split()[-1]
                        problems.append(f"{rel}:{i + 1}: {name} has {length} lines "
                                        f"(budget {MAX_FUNCTION_LINES})")
                    break
                j += 1
            i = j + 1
            continue
        i += 1

for p in problems:
    print(f"cli budget: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print("cli budget: ok")
