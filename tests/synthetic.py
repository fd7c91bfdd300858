"""The synthetic traces of `lminf_diag.synthetic`, under the name the tests have always used."""

from lminf_diag.synthetic import *  # noqa: F403
from lminf_diag.synthetic import __all__  # noqa: F401
