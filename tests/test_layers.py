"""Imports point down the layers (README, "Layout"), and no two packages or files import each other.

Read from the source (every `import`, function-local ones included), nothing is executed. A unit
is a top-level package or module of omni_jax (`data`, `parallel`, ...); a package's `__main__.py`
is an entry point whatever package it sits in.
"""

from __future__ import annotations

import ast
import collections
import functools
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "omni_jax"

# Lowest first. A unit may import its own layer and the layers below it, never one above.
LAYERS = {
    "base": {"parallel", "tokenizer", "metrics", "kernels", "version", "chips", "cli"},
    "model": {"model", "clip", "lora"},
    "inputs/outputs": {"data", "rewards", "weights", "checkpoint", "convert", "config_utils"},
    "steps": {"rollout", "timestamps"},
    "loops": {"grpo", "eval", "sft"},
    "entry points": {"__init__", "train", "infer", "aot"},
}
RANK = {unit: i for i, units in enumerate(LAYERS.values()) for unit in units}
ENTRY = len(LAYERS) - 1


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(path: pathlib.Path, name: str, modules) -> list[tuple[str, int]]:
    """(imported omni_jax module, line) for every import in the file, function-local ones too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule sub; `from mod import name` imports mod.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("omni_jax") and target != name:
                out.append((target, node.lineno))
    return out


def _unit(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


@functools.lru_cache(maxsize=1)
def _graph():
    modules = _modules()
    return modules, {name: _imports(path, name, modules) for name, path in modules.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _where(imports, members, unit_of) -> list[str]:
    return sorted({f"{src} -> {dst} (line {line})" for src, deps in imports.items() if unit_of(src) in members
                   for dst, line in deps if unit_of(dst) in members and unit_of(dst) != unit_of(src)})


def test_every_unit_has_a_layer():
    modules, _ = _graph()
    unknown = sorted({_unit(m) for m in modules} - set(RANK))
    assert not unknown, (f"omni_jax units without a layer: {unknown}; add each to LAYERS here and to the "
                         "README's layout section")


def test_no_cycle_between_packages():
    _, imports = _graph()
    edges = collections.defaultdict(set)
    for src, deps in imports.items():
        edges[_unit(src)] |= {_unit(dst) for dst, _ in deps if _unit(dst) != _unit(src)}
    cycles = _cycles(edges)
    assert not cycles, "packages importing each other:\n" + "\n".join(
        f"{c}:\n  " + "\n  ".join(_where(imports, set(c), _unit)) for c in cycles)


def test_no_cycle_between_files():
    _, imports = _graph()
    edges = {src: {dst for dst, _ in deps} for src, deps in imports.items()}
    cycles = _cycles(edges)
    assert not cycles, "files importing each other:\n" + "\n".join(
        f"{c}:\n  " + "\n  ".join(_where(imports, set(c), lambda m: m)) for c in cycles)


def test_imports_point_down_the_layers():
    _, imports = _graph()
    upward = []
    for src, deps in sorted(imports.items()):
        rank = ENTRY if src.endswith(".__main__") else RANK.get(_unit(src), ENTRY)
        for dst, line in deps:
            dst_rank = RANK.get(_unit(dst), ENTRY)
            if dst_rank > rank:
                names = list(LAYERS)
                upward.append(f"{src} (line {line}, {names[rank]}) imports {dst} ({names[dst_rank]})")
    assert not upward, "imports pointing up the layers:\n  " + "\n  ".join(upward)


@pytest.mark.parametrize("source, expected", [
    ("import omni_jax.grpo.trainer\n", {"omni_jax.grpo.trainer"}),
    ("from omni_jax.data import sources\n", {"omni_jax.data.sources"}),
    ("from omni_jax.data.errors import DataError\n", {"omni_jax.data.errors"}),
    ("def f():\n    from ..rollout import sampler\n", {"omni_jax.rollout.sampler"}),
])
def test_imports_are_read_as_written(tmp_path, source, expected):
    """The reader finds module-level, from-, function-local and relative imports."""
    modules, _ = _graph()
    fake = tmp_path / "step.py"  # read as omni_jax/grpo/step.py, so the relative import resolves
    fake.write_text(source)
    assert {m for m, _ in _imports(fake, "omni_jax.grpo.step", modules)} == expected


def test_a_cycle_is_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
