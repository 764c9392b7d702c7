"""The bad-data corpus: every file is stopped by ingestion or validation with its rule named, and nothing is registered."""
from pathlib import Path
import pytest, yaml
from mlpipeline.config import load_config
from mlpipeline.errors import DataRefused, DataValidationError
from mlpipeline.runfolder import create_run, read_manifest
from mlpipeline import ingest, validate, features, train, evaluate, registry
from conftest import REPO, write_project, mlpipeline, only_run, registered_models

BAD = REPO/'tests/data/bad'
CORPUS = yaml.safe_load((BAD/'corpus.yaml').read_text())
STAGES = [ingest.run_ingest, validate.run_validate, features.run_features, train.run_train, evaluate.run_evaluate, registry.run_register]


def bad_project(path: Path, case: dict, reference: bool) -> Path:
    return write_project(path, data={'path': str(BAD/case['file']), 'id_column': 'rownames'},
                         validation={'schema': str(BAD/'schema.yaml') if reference else None, 'severity': case.get('severity', {})})


def test_the_corpus_is_whole():
    files = sorted(p.name for p in BAD.iterdir() if p.suffix in ('.csv', '.parquet'))
    assert len(CORPUS) >= 20 and sorted(c['file'] for c in CORPUS) == files


@pytest.mark.parametrize('case', CORPUS, ids=lambda c: c['file'])
def test_each_bad_file_is_stopped_with_its_rule(tmp_path, case):
    for reference in ([True, False] if case.get('fresh') else [True]):
        project = bad_project(tmp_path/f'reference-{reference}', case, reference)
        rd = create_run(load_config(project=project))
        with pytest.raises(DataValidationError) as e:
            for stage in STAGES: stage(rd)
        assert isinstance(e.value, DataRefused) == (case['stage'] == 'ingest') and e.value.exit_code == 3
        assert case['rule'] in str(e.value) and case['rule'] in {v['rule'] for v in e.value.violations}, (reference, str(e.value))
        if case['stage'] == 'validate':
            assert all(v['rows'] > 0 or v['rule'] == 'empty_batch' for v in e.value.violations)
        stages = read_manifest(rd)['stages']
        assert '03_features' not in stages and registered_models(project) == []


def test_the_cli_refuses_bad_data_with_exit_code_3_and_registers_nothing(tmp_path):
    project = bad_project(tmp_path/'p', {'file': 'unseen_category.csv'}, reference=True)
    r = mlpipeline('run', '--quiet', '--engine', 'warm', cwd=project)
    assert r.returncode == 3, r.stderr
    assert "column 'contract': unseen_category: expected one of 3 known values, observed 8 values, e.g. 'Ten year' (8 rows)" in r.stderr
    rd = only_run(project)
    assert (rd/'artifacts/validation.html').exists() and not (rd/'03_features.ipynb').exists() and registered_models(project) == []


def test_the_cli_refuses_an_unreadable_source_with_exit_code_3(tmp_path):
    project = bad_project(tmp_path/'p', {'file': 'latin1_encoding.csv'}, reference=False)
    r = mlpipeline('run', '--quiet', '--engine', 'warm', cwd=project)
    assert r.returncode == 3 and f"data refused at ingestion from {BAD/'latin1_encoding.csv'}: not_utf8" in r.stderr, r.stderr
    assert registered_models(project) == []


def test_new_data_is_validated_against_the_champions_schema(finished):
    project, _, _ = finished
    cfg = load_config(project=project, overrides=[f"data.path={BAD/'unseen_category.csv'}", 'runs_dir=runs-champion-schema'])
    rd = create_run(cfg)
    ingest.run_ingest(rd)
    with pytest.raises(DataValidationError, match="column 'contract': unseen_category"):
        validate.run_validate(rd)
    assert 'against the champion test-model version 1 schema' in (rd/'artifacts/validation.html').read_text()
    assert (rd/'artifacts/schema.yaml').read_text() == validate.champion_schema(cfg).to_yaml()  # the champion's schema, byte for byte


@pytest.mark.parametrize('file, rule', [('duplicate_column_names.csv', "column 'churn': duplicate_columns"),
                                        ('infinite_values.csv', "column 'total_charges': infinite_values")])
def test_what_got_through_before_now_exits_3_through_the_cli(tmp_path, file, rule):
    project = bad_project(tmp_path/'p', {'file': file}, reference=False)
    r = mlpipeline('run', '--quiet', '--engine', 'warm', cwd=project)
    assert r.returncode == 3 and rule in r.stderr, r.stderr
    assert '[bt]' not in r.stderr and registered_models(project) == []  # no XGBoost stack trace, no version
