"""The faster paths give exactly the results of the per-value code they replace, on random inputs."""
import numpy as np, pandas as pd, pytest
from mlpipeline.validate import norm_label, known_label, check_values, violation, _examples

POOL = [' Yes', 'yes', 'NO', 'no ', 'Maybe', 'ß', 'SS', 1, 2, 0, -0.0, 0.0, 1.0, 2.5, True, False, np.int64(1),
        np.float64(1.0), np.bool_(True), 'True', '1', '1.0', '', ' ']


def per_value(present: pd.Series, known: set) -> pd.Series:
    "The code `known_label` replaces: one `norm_label` call per row."
    return present.map(norm_label).isin(known)


def random_series(rng: np.random.Generator, n: int) -> pd.Series:
    "A column of one kind the validation meets: text, whole numbers, booleans, floats or a mix, in several dtypes."
    kind = rng.integers(6)
    if kind == 0: return pd.Series(rng.choice([p for p in POOL if isinstance(p, str)], n), index=rng.permutation(n))
    if kind == 1: return pd.Series(rng.integers(-3, 4, n))
    if kind == 2: return pd.Series(rng.random(n) < 0.5)
    if kind == 3: return pd.Series(rng.choice([-0.0, 0.0, 1.0, 2.5], n))
    if kind == 4: return pd.Series([POOL[i] for i in rng.integers(len(POOL), size=n)], dtype=object)
    return pd.Series(rng.choice(['a', ' A', 'b'], n)).astype('category' if rng.random() < 0.5 else 'string')


@pytest.mark.parametrize('seed', range(40))
def test_known_label_equals_the_per_value_check(seed):
    rng = np.random.default_rng(seed)
    s = random_series(rng, int(rng.integers(0, 200)))
    known = {norm_label(v) for v in rng.choice(np.array(POOL + ['a', 'b'], dtype=object), 4)}
    pd.testing.assert_series_equal(known_label(s, known), per_value(s, known), check_names=False)


@pytest.mark.parametrize('seed', range(20))
def test_check_values_finds_the_same_unseen_categories(seed):
    "The whole rule, report row included (count and examples), as the per-value code wrote it."
    rng = np.random.default_rng(seed)
    s = random_series(rng, 300)
    domain = sorted({str(v).strip() for v in rng.choice(np.array(POOL + ['a'], dtype=object), 5)})
    spec = {'kind': 'categorical', 'domain': domain, 'max_missing': 0.0}
    new = s[~per_value(s, {norm_label(v) for v in domain})]
    found = [v for v in check_values(s, spec, 'c') if v['rule'] == 'unseen_category']
    want = violation('c', 'unseen_category', f'one of {len({norm_label(v) for v in domain})} known values',
                     f'{len(new)} values, e.g. {_examples(new)}', len(new), len(s))
    assert found == ([want] if len(new) else [])
