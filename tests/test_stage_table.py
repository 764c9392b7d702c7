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


def test_no_other_list_of_stage_names_in_the_package():
    "A list or tuple of two or more stage names anywhere but the table is a second, hand-kept list."
    names, found = set(STAGES), []
    for f in sorted((REPO/'mlpipeline').glob('*.py')):
        if f.name in ('stages.py', '_modidx.py'): continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
                hits = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in names]
                if len(hits) >= 2: found.append(f'{f.name}:{node.lineno} {hits}')
            if isinstance(node, ast.Dict):
                hits = [k.value for k in node.keys if isinstance(k, ast.Constant) and k.value in names]
                if len(hits) >= 2: found.append(f'{f.name}:{node.lineno} {hits}')
    assert not found, found


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
