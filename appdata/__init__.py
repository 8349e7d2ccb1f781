"""appdata: stream and batch pipeline for app-download analytics on Dagster and AWS."""

import warnings

__version__ = "0.1.0"

# The one home of the warnings we know about: Dagster flags the lifecycle of APIs we use on
# purpose (single-run backfill policies, pools, ...) in every process that loads the code
# location, dozens of times an hour under `appdata up`. Matched by message so that importing
# appdata (the Lambda package, too) does not import Dagster.
warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")
