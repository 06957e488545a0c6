#!/usr/bin/env python3
"""The shape of src/: function lengths and the import graphs between modules and files.

  tools/code_shape.py functions [N]   the N longest functions outside tests (default 15)
  tools/code_shape.py cycles          import cycles between modules of src/, and between its
                                      files (exit 1 if any)
  tools/code_shape.py check           the structure's limits: no cycle of either kind, no
                                      function outside tests over 100 lines (exit 1 if broken)

A module is a top-level name under src/ (src/store/dynamo.rs belongs to `store`). An import is
any `crate::name` path in a module's code outside `#[cfg(test)]` blocks. Between files, an import
is a `crate::` or `super::` path (in a `use` tree or inline) that names another file's module;
a `mod.rs` naming its own submodules (declaring or re-exporting them) is not one, since a parent
holds its children. Lengths are counted by brace matching from the `fn` line to its closing
brace.
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


def file_module(path):
    """The module path of a file: src/store/dynamo/read.rs -> ('store', 'dynamo', 'read')."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return tuple(parts)


def use_paths(text):
    """Every path a `use` tree names, expanded: `a::{b, c::d}` -> a::b, a::c::d."""
    def expand(s):
        s = s.strip()
        if not s:
            return []
        i = s.find("{")
        if i < 0:
            return [s.split(" as ")[0].strip()]
        prefix, inner = s[:i], s[i + 1:s.rindex("}")]
        items, depth, start = [], 0, 0
        for j, c in enumerate(inner):
            depth += (c == "{") - (c == "}")
            if c == "," and depth == 0:
                items.append(inner[start:j])
                start = j + 1
        items.append(inner[start:])
        return [prefix + p for item in items for p in expand(item)]
    return expand(text)


def file_graph():
    files = {}
    for path in SRC.rglob("*.rs"):
        if path.parent.name == "bin" or path.name in ("main.rs", "lib.rs"):
            continue
        files[file_module(path)] = path
    edges = {}
    for mod, path in files.items():
        is_dir = path.name == "mod.rs"
        code = "\n".join(strip_strings(l) for l in code_lines(path))
        paths = []
        for m in re.finditer(r"\buse\s+([^;]+);", code):
            paths += use_paths(m.group(1))
        paths += re.findall(r"\b(?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+", code)
        for p in paths:
            parts = [x for x in re.split(r"\s*::\s*", p.strip()) if x]
            if not parts:
                continue
            if parts[0] == "crate":
                base, rest = (), parts[1:]
            elif parts[0] == "super":
                # A file's `super` is its parent module, whether it is `x.rs` or `x/mod.rs`.
                base, rest = mod[:-1], parts[1:]
                while rest and rest[0] == "super":
                    base, rest = base[:-1], rest[1:]
            else:
                continue
            target = None
            for k in range(len(rest), -1, -1):
                cand = tuple(base) + tuple(rest[:k])
                if cand in files:
                    target = cand
                    break
            if target is None or target == mod:
                continue
            if is_dir and target[:len(mod)] == mod:
                continue  # a parent naming its own children
            edges.setdefault("/".join(mod), set()).add("/".join(target))
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
    between_files = cycles(file_graph())
    if cmd == "cycles":
        for c in found:
            print(" -> ".join(c + (c[0],)))
        for c in between_files:
            print("files: " + " -> ".join(c + (c[0],)))
        print(f"{len(found)} import cycles between modules, {len(between_files)} between files")
        return 1 if found or between_files else 0
    if cmd == "check":
        long = [f for f in functions() if f[0] > 100]
        for c in found:
            print("import cycle: " + " -> ".join(c + (c[0],)))
        for c in between_files:
            print("import cycle between files: " + " -> ".join(c + (c[0],)))
        for length, where, name in long:
            print(f"function over 100 lines: {name} ({length} lines) at {where}")
        return 1 if found or between_files or long else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
