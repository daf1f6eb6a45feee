"""Former name of :mod:`qrobust_keras.attacks.common`, kept while the last imports of the old name move there.

Example:

>>> from qrobust_keras.attacks import _common, common
>>> _common.enforce_constraints is common.enforce_constraints
True
"""

from qrobust_keras.attacks.common import *  # noqa: F401,F403
from qrobust_keras.attacks.common import __all__  # noqa: F401
