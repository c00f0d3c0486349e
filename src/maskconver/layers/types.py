"""Layer-constructor types shared by every module that takes its norm/activation as a callable.

``NormLayer``: ``norm_layer(num_channels) -> nn.Module`` (``nn.BatchNorm2d``,
``partial(LayerNorm2d, eps=1e-6)``, ...). ``ActLayer``: ``act_layer() -> nn.Module``
(``nn.ReLU``, ``nn.GELU``, ...). Strings are resolved into these only in ``build.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]
