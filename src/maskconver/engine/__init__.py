"""Training and evaluation machinery.

``train.train`` (the loop), ``optim`` (weight-decay groups, optimizers, ``lr_at``), ``ema``
(``ModelEma``), ``checkpoint`` (directory checkpoints, ``load_model``), ``integrity`` (the
network-config fingerprint and finiteness checks of checkpoint weights), ``distributed``
(torchrun helpers), ``logging`` (``MetricLogger``), ``data`` (which datasets a run uses) and
``evaluate``. Import the submodules directly; this package imports nothing so that light users
stay light.
"""
