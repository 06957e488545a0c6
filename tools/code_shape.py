#!/usr/bin/env python3
"""The shape of src/: function lengths and the import graph between top-level modules.

  tools/code_shape.py functions [N]   the N longest functions outside tests (default 15)
  tools/code_shape.py cycles          import cycles between modules of src/ (exit 1 if any)
  tools/code_shape.py check           both limits of the structure issue: no cycle, no function
                                      outside tests over 100 lines (exit 1 if broken)

A module is a top-level name under src/ (src/store/dynamo.rs belongs to `store`). An import is
any `crate::name` path in a module's code outside `#[cfg(test)]` blocks. Lengths are counted by
brace matching from the `fn` line to its closing brace.
"""
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+([A-Za-z0-9_]+)")


def strip_strings(line):
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "' '", line)
    return line.split("//")[0]


def code_lines(path):
    """The file's lines with `#[cfg(test)]` items blanked out."""
    lines = path.read_text().splitlines()
    out, skip_depth, pending, depth = [], None, False, 0
    for line in lines:
        clean = strip_strings(line)
        if skip_depth is None and re.match(r"\s*#\[cfg\(test\)\]", line):
            pending = True
            out.append("")
            continue
        if pending and skip_depth is None:
            if "{" in clean:
                skip_depth = depth
            elif clean.strip().endswith(";"):
                pending = False
                out.append("")
                continue
        depth += clean.count("{") - clean.count("}")
        if skip_depth is not None:
            out.append("")
            if depth <= skip_depth:
                skip_depth, pending = None, False
            continue
        out.append(line)
    return out


def functions():
    found = []
    for path in sorted(SRC.rglob("*.rs")):
        lines = code_lines(path)
        for i, line in enumerate(lines):
            m = FN.match(line)
            if not m:
                continue
            depth, started = 0, False
            for j in range(i, len(lines)):
                clean = strip_strings(lines[j])
                if not started and ";" in clean and "{" not in clean:
                    break  # a declaration without a body
                depth += clean.count("{") - clean.count("}")
                started = started or "{" in clean
                if started and depth <= 0:
                    found.append((j - i + 1, f"{path.relative_to(SRC.parent)}:{i + 1}", m.group(6)))
                    break
    return sorted(found, reverse=True)


def module_of(path):
    rel = path.relative_to(SRC)
    name = rel.parts[0]
    return name[:-3] if name.endswith(".rs") else name


def graph():
    edges = {}
    for path in SRC.rglob("*.rs"):
        if path.parent.name == "bin" or path.name in ("main.rs", "lib.rs"):
            continue
        mod = module_of(path)
        for line in code_lines(path):
            for target in re.findall(r"crate::([a-z_][a-z0-9_]*)", strip_strings(line)):
                if target != mod:
                    edges.setdefault(mod, set()).add(target)
    return edges


def cycles(edges):
    """Every elementary cycle, each once (smallest module first)."""
    found = set()
    nodes = sorted(set(edges) | {t for ts in edges.values() for t in ts})

    def walk(start, node, path):
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                found.add(tuple(path))
            elif nxt > start and nxt not in path:
                walk(start, nxt, path + [nxt])

    for start in nodes:
        walk(start, start, [start])
    return sorted(found)


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else "check"
    if cmd == "functions":
        n = int(sys.argv[2]) if len(sys.argv) > 2 else 15
        for length, where, name in functions()[:n]:
            print(f"{length:5} {name:32} {where}")
        return 0
    found = cycles(graph())
    if cmd == "cycles":
        for c in found:
            print(" -> ".join(c + (c[0],)))
        print(f"{len(found)} import cycles")
        return 1 if found else 0
    if cmd == "check":
        long = [f for f in functions() if f[0] > 100]
        for c in found:
            print("import cycle: " + " -> ".join(c + (c[0],)))
        for length, where, name in long:
            print(f"function over 100 lines: {name} ({length} lines) at {where}")
        return 1 if found or long else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
