#!/usr/bin/env python
"""Image classification with MixPro through ``MixProTrainer`` (installed as the ``mixpro-train`` command).

    python examples/run_image_classification.py                      # embedded digits default
    accelerate launch --num_processes 2 examples/run_image_classification.py --train_file ... --mix_method mixpro

All flags: ``python examples/run_image_classification.py --help``. The code is ``mixpro_hf.train``.
"""

import sys

from mixpro_hf.train import main

if __name__ == "__main__":
    sys.exit(main())
