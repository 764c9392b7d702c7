__version__ = "0.1.0"

import os as _os
# XGBoost's OpenMP worker threads spin while they wait (GNU OpenMP's default). With two processes on two cores, as
# under `nbdev_test --n_workers 2` or a server beside its clients, the spinning threads starve each other: the
# notebook examples took 130 s instead of 19 s. Waiting passively costs nothing measurable here. It must be set
# before xgboost loads, which importing mlpipeline first ensures; a user's own setting wins.
_os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
