"""`python -m distill.training job.json`: run a chain of training steps, also under `accelerate launch`."""

import sys

from distill.training.chain import main

sys.exit(main())
