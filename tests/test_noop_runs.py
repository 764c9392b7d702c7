"""A run with nothing new registers nothing new: the same command twice on unchanged data, code and config reuses the
registered version and moves no alias; `--force` registers anyway (issue 21, no-op runs). With the run folder still
there the stage cache already reuses every stage; without it (runs/ cleaned, or another machine on the same tracking
server) every stage runs again and registration finds the version by what it was built from."""
import json, shutil
import pytest
from conftest import write_project, mlpipeline, client_for


def versions(project) -> list[int]:
    return sorted(int(mv.version) for mv in client_for(project).search_model_versions("name='test-model'"))


@pytest.mark.slow
def test_the_same_run_twice_registers_once_and_force_registers_again(tmp_path):
    project = write_project(tmp_path/'p')
    runs = [mlpipeline('run', '--quiet', '--engine', 'warm', cwd=project)]
    shutil.rmtree(project/'runs')  # no stage cache to lean on
    runs.append(mlpipeline('run', '--quiet', '--engine', 'warm', cwd=project))
    assert [r.returncode for r in runs] == [0, 0], runs[-1].stderr[-2000:]
    assert runs[0].stdout.strip().endswith('champion: version 1 is the champion'), runs[0].stdout
    assert runs[1].stdout.strip().endswith('champion: unchanged: same data, code, config and model as version 1 '
                                           '(challenger, champion), reused; no alias moved (--force registers a new version)')
    client = client_for(project)
    assert versions(project) == [1] and str(client.get_model_version_by_alias('test-model', 'champion').version) == '1'
    reg = json.loads(next(project.glob('runs/*/artifacts/registered.json')).read_text())
    assert reg['reused'] and reg['moves'] == [] and reg['version'] == 1
    tagged = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.reused_version = '1'")
    assert len(tagged) == 1  # the second run's 06_register says which version it is
    forced = mlpipeline('run', '--quiet', '--engine', 'warm', '--force', '06_register', cwd=project)
    assert forced.returncode == 0 and versions(project) == [1, 2], forced.stderr[-2000:]
