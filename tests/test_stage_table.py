"""The stage table is the one declaration of the stages: notebooks, modules, outputs and cache keys follow it."""
import ast, copy, json
from pathlib import Path
import pytest
from conftest import REPO, write_project, mlpipeline, only_run, manifest
from mlpipeline.stages import TABLE, STAGES, EVERY_STAGE


@pytest.mark.parametrize('s', TABLE, ids=lambda s: s.name)
def test_each_stage_is_its_notebook_module_and_function(s):
    "The notebook exports the declared module, its driver calls the declared function, and the function takes a run folder."
    nb = json.loads((REPO/'nbs'/s.notebook).read_text())
    code = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
    assert f'#| default_exp {s.module}' in code[0], code[0]
    assert any(f'{s.function}(' in c and '#| export' not in c for c in code), f'{s.notebook} has no driver calling {s.function}'
    assert list(__import__('inspect').signature(s.runner()).parameters)[0] == 'run_dir'


def docstrings(tree: ast.AST) -> set:
    "The string constants that are docstrings: prose, not code."
    bodies = [n.body for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return {id(b[0].value) for b in bodies if b and isinstance(b[0], ast.Expr) and isinstance(b[0].value, ast.Constant)}


def parsed(source: str, tries: int = 3) -> ast.AST:
    "`ast.parse`, tried again on CPython 3.11's SystemError when another thread of the worker builds an AST too."
    for i in range(tries):  # "AST constructor recursion depth mismatch": CPython keeps that depth per interpreter
        try: return ast.parse(source)
        except SystemError:
            if i == tries - 1: raise


def test_stage_names_appear_in_the_table_alone():
    "No code outside the table names a stage: not in a list, a key, a comparison, an f-string or `stage.output`."
    pattern = __import__('re').compile(r'\b(' + '|'.join(STAGES) + r')\b')
    found = []
    for f in sorted((REPO/'mlpipeline').glob('*.py')):
        if f.name in ('stages.py', '_modidx.py'): continue
        tree = parsed(f.read_text())
        prose = docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
                code = __import__('re').sub(r'#[^\n]*', '', node.value) if '\n' in node.value else node.value  # YAML comments are prose
                if pattern.search(code): found.append(f'{f.name}:{node.lineno} {node.value[:60]!r}')
    assert not found, found


def test_the_table_names_each_output_once():
    "An output's name finds the one stage that writes it (`producer`, `output_of`)."
    outs = [o for s in TABLE for o in s.outputs]
    assert len(outs) == len(set(outs))


def test_a_run_records_only_declared_outputs(finished):
    _, rd, _ = finished
    m = manifest(rd)
    assert list(m['stages']) == STAGES
    for s in TABLE: assert set(m['stages'][s.name]['outputs']) <= set(s.outputs), (s.name, m['stages'][s.name]['outputs'])


@pytest.fixture(scope='module')
def cached(tmp_path_factory):
    "A project run once, whose next run with the same config would reuse every stage (validation against `infer`)."
    from mlpipeline.config import load_config
    from mlpipeline.cache import plan_lines
    project = write_project(tmp_path_factory.mktemp('table')/'project', validation={'schema': 'infer'})
    r = mlpipeline('run', '--quiet', '--engine', 'warm', cwd=project)
    assert r.returncode == 0, r.stderr
    cfg = load_config(project=project)
    assert all(' cached ' in l for l in plan_lines(cfg, STAGES)), plan_lines(cfg, STAGES)
    return cfg


def changed(cfg: dict, key: str) -> tuple[dict, str]:
    "`cfg` with the value at `key` changed (a section gains a key); and the dotted key that changed."
    out, node, parts = copy.deepcopy(cfg), None, key.split('.')
    node = out
    for p in parts[:-1]: node = node.setdefault(p, {})
    v = node.get(parts[-1])
    if isinstance(v, dict): v['_probe'] = 1; return out, key + '._probe'
    node[parts[-1]] = (not v) if isinstance(v, bool) else v + 1 if isinstance(v, (int, float)) else [v, 'probe'] if isinstance(v, list) else f'{v}-probe'
    return out, key


def test_each_declared_key_reruns_exactly_its_stage_and_downstream(cached):
    "Change each declared key in turn: the first stage that declares it runs, every stage before it is reused."
    from mlpipeline.cache import plan_lines
    keys = sorted({k for s in TABLE for k in s.config} | set(EVERY_STAGE))
    for key in keys:
        cfg, leaf = changed(cached, key)
        first = next(s.name for s in TABLE if s.reads(leaf) or leaf in EVERY_STAGE or leaf.startswith(tuple(k + '.' for k in EVERY_STAGE)))
        lines = {l.split()[0]: l.split(None, 1)[1] for l in plan_lines(cfg, STAGES)}
        runs = [s for s, v in lines.items() if v.startswith('runs')]
        assert runs and runs[0] == first and runs == STAGES[STAGES.index(first):], (key, lines)
        assert f'parameter {leaf} changed' in lines[first] or leaf.startswith('mlflow.'), (key, lines[first])


def test_the_executed_notebook_is_the_stages_report(finished):
    "A run's notebook holds what the stage did: its title, folded code, parameters and run section, every cell executed."
    _, rd, _ = finished
    for s in TABLE:
        nb = json.loads((rd/s.notebook).read_text())
        code = [c for c in nb['cells'] if c['cell_type'] == 'code']
        assert ''.join(nb['cells'][0]['source']).startswith('# '), s.name
        assert code and all(c.get('execution_count') for c in code), (s.name, [c['source'][:1] for c in code if not c.get('execution_count')])
        assert any(c.get('outputs') for c in code), s.name  # the run section shows its results
