"""Layers point one way: the package's import graph, imports inside functions included, has no cycle, and no stage
imports the runner."""
import ast
from pathlib import Path
from conftest import REPO
from mlpipeline.stages import TABLE

PKG = REPO/'mlpipeline'
RUNNER = {'cli', 'pipeline', 'engine', 'cache', 'airflow', 'schedule', 'server', 'scaffold', 'overview', 'deploy'}  # the CLI, the runner, the tools above the stages


def imports(path: Path, mods: set) -> set:
    "The package modules `path` imports anywhere in it (module level or inside a function)."
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split('.')
            if node.level == 1: out.add(parts[0])
            elif parts[0] == 'mlpipeline': out |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split('.')[1] for a in node.names if a.name.startswith('mlpipeline.')}
    return (out & mods) - {path.stem}


def graph() -> dict:
    mods = {f.stem for f in PKG.glob('*.py') if f.stem not in ('__init__', '_modidx')}
    return {m: imports(PKG/f'{m}.py', mods) for m in mods}


def cycles(g: dict) -> list:
    "The import cycles of `g`, as Tarjan's strongly connected components of more than one module."
    index, low, stack, on, out = {}, {}, [], set(), []
    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v: comp.append(stack.pop()); on.discard(comp[-1])
            if len(comp) > 1: out.append(sorted(comp))
    for v in sorted(g):
        if v not in index: visit(v)
    return out


def test_the_package_has_no_import_cycle():
    g = graph()
    assert cycles({'a': {'b'}, 'b': {'a'}, 'c': {'a'}}) == [['a', 'b']]  # the check itself finds one
    assert cycles(g) == [], cycles(g)


def test_stages_and_the_scoring_core_never_import_the_runner():
    g = graph()
    core = {'scoring', 'explain', 'pyfunc_model', 'stages', 'config', 'errors', 'runfolder', 'compute', 'metrics', 'pages',
            'registry_read'}
    lower = {s.module for s in TABLE} | core | {'feature_store'}  # feature_store: a stage-layer helper of ingest, serve
    bad = {m: sorted(g[m] & RUNNER) for m in lower if g[m] & RUNNER}
    assert not bad, bad


def test_the_cli_is_the_top_layer():
    "No module imports the command line; it is the console script's entry point."
    g = graph()
    assert not [m for m, deps in g.items() if 'cli' in deps], {m for m, deps in g.items() if 'cli' in deps}
    assert 'mlpipeline=mlpipeline.cli:main' in (REPO/'settings.ini').read_text()
