#!/usr/bin/env python3
"""Checks that the crate's layers point down (docs/architecture.md).

Every `crate::` path in the code of src/ (comments and doc comments are not
read) names a top-level module, directly or through a re-export of lib.rs.
A module may name itself and the modules listed for it in LAYERS; anything
else is an upward or sideways import and fails with its file and line.
lib.rs, the facade that re-exports the public API, is not checked.

  python3 .ci/layers.py             check src/, print the layer table
  python3 .ci/layers.py --graph DIR print file-level import counts and circles
                                    of any tree (no layer rules)
  python3 .ci/layers.py --self-test show that an upward import is caught
"""

import os
import re
import sys
import tempfile

# module: (layer, what it owns, the modules it may import)
LAYERS = {
    "base": (1, "addresses, the loom shim, wait strategies", []),
    "vocab": (2, "slot keys, flags, regions, changes, frame checks", ["base"]),
    "zap": (2, "the zap-range binner (stands on its own)", ["base"]),
    "error": (3, "errors and their errnos", ["base", "vocab"]),
    "backend": (4, "the backend seam", ["base", "vocab", "error"]),
    "memory": (5, "host memory: backing, owned RAM, dirty bitmap, copies", ["base", "vocab", "error"]),
    "map": (6, "the slot map: sets, indexes, readers, writer, batches",
            ["base", "vocab", "error", "backend", "memory"]),
    "access": (7, "guest access through views, GpaCache, GuestRange",
               ["base", "vocab", "error", "memory", "map"]),
    "kvm": (8, "the kvm integration",
            ["base", "vocab", "error", "backend", "memory", "map", "access"]),
    "vm_memory": (8, "the vm-memory integration",
                  ["base", "vocab", "error", "backend", "memory", "map", "access"]),
}

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


# A comment, a string literal or a char literal (raw strings are not used
# in src/); blanked before paths are read.
NOT_CODE = re.compile(r"//[^\n]*|/\*.*?\*/|\"(\\.|[^\"\\])*\"|'(\\.|[^\\'])'", re.S)


def code_lines(path):
    """The lines of a Rust file with comments and literals blanked."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return NOT_CODE.sub(lambda m: "\n" * m.group(0).count("\n"), text).split("\n")


def crate_paths(lines):
    """Yields (line number, path) for every `crate::` path, with `use`
    groups expanded: `use crate::a::{b, c::d}` gives a::b and a::c::d."""
    joined = "\n".join(lines)
    for m in re.finditer(r"(?<![A-Za-z0-9_$])crate\s*::\s*", joined):
        line = joined.count("\n", 0, m.start()) + 1
        rest = joined[m.end():]
        if rest.startswith("{"):
            depth, end = 0, 0
            for end, c in enumerate(rest):
                depth += c == "{"
                depth -= c == "}"
                if depth == 0:
                    break
            for path in expand(rest[1:end]):
                yield line, path
        else:
            path = re.match(rf"{IDENT}(\s*::\s*(\{{[^}}]*\}}|{IDENT}))*", rest)
            if path:
                text = re.sub(r"\s", "", path.group(0))
                if "{" in text:
                    head, group = text.split("{", 1)
                    for tail in expand(group.rstrip("}")):
                        yield line, head + tail
                else:
                    yield line, text


def expand(group):
    """Splits a `use` group at its top-level commas, expanding nested ones."""
    items, depth, cur = [], 0, ""
    for c in group:
        if c == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += c == "{"
        depth -= c == "}"
        cur += c
    items.append(cur)
    for item in (re.sub(r"\s", "", i) for i in items):
        if not item:
            continue
        if "{" in item:
            head, inner = item.split("{", 1)
            for tail in expand(inner[:-1]):
                yield head + tail
        else:
            yield item.split("as")[0] if re.search(r"\bas\b", item) else item


def root_reexports(src):
    """Names lib.rs re-exports, with the top-level module each comes from."""
    names = {}
    lines = code_lines(os.path.join(src, "lib.rs"))
    text = "\n".join(lines)
    for m in re.finditer(r"pub\s+use\s+([^;]+);", text):
        path = re.sub(r"\s", "", m.group(1))
        top = path.split("::")[0]
        group = path[len(top) + 2:]
        for item in expand(group if not group.startswith("{") else group[1:-1]):
            name = item.split("::")[-1]
            names[name] = top
    return names


def rust_files(src):
    for root, _, files in os.walk(src):
        for name in sorted(files):
            if name.endswith(".rs"):
                yield os.path.join(root, name)


def top_module(src, path):
    rel = os.path.relpath(path, src)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def check(src):
    reexports = root_reexports(src)
    errors, counts = [], {}
    for path in rust_files(src):
        module = top_module(src, path)
        if module == "lib":
            continue
        if module not in LAYERS:
            errors.append(f"{path}: module `{module}` has no layer in .ci/layers.py")
            continue
        allowed = set(LAYERS[module][2]) | {module}
        for line, cpath in crate_paths(code_lines(path)):
            first = cpath.split("::")[0]
            target = first if first in LAYERS else reexports.get(first)
            if target is None:
                errors.append(f"{path}:{line}: `crate::{cpath}` names nothing lib.rs or a module gives")
                continue
            if target != module:
                counts[(module, target)] = counts.get((module, target), 0) + 1
            if target not in allowed:
                layer, target_layer = LAYERS[module][0], LAYERS[target][0]
                errors.append(
                    f"{path}:{line}: {module} (layer {layer}) imports {target} (layer {target_layer}): "
                    f"`crate::{cpath}`; allowed: {', '.join(LAYERS[module][2]) or 'nothing'}"
                )
    return errors, counts


def print_table(counts):
    print("layer | module | owns | may import | imports used")
    for module, (layer, owns, allowed) in sorted(LAYERS.items(), key=lambda kv: (kv[1][0], kv[0])):
        used = sorted(t for (m, t) in counts if m == module)
        print(f"{layer} | {module} | {owns} | {', '.join(allowed) or '-'} | {', '.join(used) or '-'}")


def file_graph(src):
    """File-level import edges, following `crate::` and `super::` paths to
    the file that defines the named module or item (through `pub use` of a
    mod.rs or lib.rs where the name is re-exported)."""
    files = {os.path.relpath(p, src): code_lines(p) for p in rust_files(src)}

    def module_file(parts):
        base = os.path.join(*parts) if parts else ""
        for cand in (base + ".rs", os.path.join(base, "mod.rs")) if parts else ("lib.rs",):
            if cand in files:
                return cand
        return None

    def reexport_source(modfile, modparts, name):
        text = "\n".join(files[modfile])
        for m in re.finditer(r"pub(\([a-z]+\))?\s+use\s+([^;]+);", text):
            path = re.sub(r"\s", "", m.group(2))
            for item in expand(path) if "{" in path else [path]:
                segs = item.split("::")
                if segs[-1] != name:
                    continue
                if segs[0] == "crate":
                    segs = segs[1:]
                    return resolve([], segs)
                return resolve(modparts, segs)
        return modfile

    def resolve(prefix, segs):
        parts, found = list(prefix), module_file(prefix)
        for i, seg in enumerate(segs):
            nxt = module_file(parts + [seg])
            if nxt is None:
                if found and found.endswith(("mod.rs", "lib.rs")) and i < len(segs):
                    return reexport_source(found, parts, seg)
                return found
            parts.append(seg)
            found = nxt
        return found

    edges = set()
    for rel, lines in files.items():
        parts = rel[:-3].split(os.sep)
        if parts[-1] in ("mod", "lib"):
            parts = parts[:-1]
        for _, cpath in crate_paths(lines):
            target = resolve([], cpath.split("::"))
            if target and target != rel:
                edges.add((rel, target))
        text = "\n".join(lines)
        for m in re.finditer(rf"(?<![A-Za-z0-9_])((super\s*::\s*)+)({IDENT}(\s*::\s*{IDENT})*)", text):
            ups = m.group(1).count("super")
            base = parts[: len(parts) - ups] if ups <= len(parts) else []
            target = resolve(base, re.sub(r"\s", "", m.group(3)).split("::"))
            if target and target != rel:
                edges.add((rel, target))
    return files, edges


def circles(nodes, edges):
    """Strongly connected components of more than one file (Tarjan)."""
    succ = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for n in nodes:
        if n not in index:
            visit(n)
    return out


def graph(src):
    files, edges = file_graph(src)
    tops = {(a.split(os.sep)[0].removesuffix(".rs"), b.split(os.sep)[0].removesuffix(".rs")) for a, b in edges}
    tops = {(a, b) for a, b in tops if a != b and "lib" not in (a, b)}
    inner = {(a, b) for a, b in edges if "lib.rs" not in (a, b)}
    print(f"{len(files)} files, {len(inner)} file-to-file imports (lib.rs left out)")
    for comp in circles([f for f in files if f != "lib.rs"], inner):
        print(f"file circle of {len(comp)}: {' '.join(comp)}")
    mods = sorted({m for e in tops for m in e})
    for comp in circles(mods, tops):
        print(f"module circle of {len(comp)}: {' '.join(comp)}")


def self_test():
    """A tree with one upward import, one import through a root re-export
    and one in a comment: exactly the first two must be reported."""
    with tempfile.TemporaryDirectory() as src:
        os.makedirs(os.path.join(src, "map"))
        os.makedirs(os.path.join(src, "base"))
        with open(os.path.join(src, "lib.rs"), "w") as f:
            f.write("mod base;\nmod map;\nmod access;\npub use access::GpaCache;\n")
        with open(os.path.join(src, "base", "mod.rs"), "w") as f:
            f.write("// crate::map::Writer in a comment is not an import\npub(crate) mod addr;\n")
        with open(os.path.join(src, "base", "addr.rs"), "w") as f:
            f.write("pub(crate) const X: u8 = 0;\n")
        with open(os.path.join(src, "map", "mod.rs"), "w") as f:
            f.write("use crate::base::addr::X;\nuse crate::{\n    access::view::Segment,\n};\n"
                    "fn f() { let _ = crate::GpaCache::new; }\n")
        with open(os.path.join(src, "access.rs"), "w") as f:
            f.write("use crate::map::Slot;\n")
        errors, _ = check(src)
        found = sorted(e.split(": ", 1)[0].replace(src + os.sep, "") for e in errors)
        expected = ["map/mod.rs:2", "map/mod.rs:5"]
        if found != expected:
            print("self-test FAILED: expected", expected, "got", found, *errors, sep="\n  ")
            return 1
        print("self-test: the upward imports in the test tree were caught:", *errors, sep="\n  ")
        return 0


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.join(here, "..", "src")
    if sys.argv[1:2] == ["--self-test"]:
        return self_test()
    if sys.argv[1:2] == ["--graph"]:
        graph(sys.argv[2] if len(sys.argv) > 2 else src)
        return 0
    errors, counts = check(src)
    print_table(counts)
    graph(src)
    if errors:
        print(f"\n{len(errors)} import(s) break the layering:", *errors, sep="\n")
        return 1
    print("layering holds: every import points down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
