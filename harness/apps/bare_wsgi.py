"""A bare WSGI callable (no framework) behind `fitflix.wrap`: harness/apps/leaky.py's app, wrapped.

leaky.app answers /health itself (for servers without FitFlix's endpoints); wrapped, FitFlix's
/health answers instead, and /leak, /spike, /pid and the rest reach leaky.app as they are.
"""

import fitflix
from harness.apps import leaky

application = fitflix.wrap(leaky.app)
