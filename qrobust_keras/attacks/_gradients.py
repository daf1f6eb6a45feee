"""Former name of :mod:`qrobust_keras.attacks.gradients`, kept while the last imports of the old name move there.

Example:

>>> from qrobust_keras.attacks import _gradients, gradients
>>> _gradients.forward_fn is gradients.forward_fn
True
"""

from qrobust_keras.attacks.gradients import *  # noqa: F401,F403
from qrobust_keras.attacks.gradients import __all__  # noqa: F401
