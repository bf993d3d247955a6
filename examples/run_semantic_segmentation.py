#!/usr/bin/env python
"""Semantic segmentation from a classification checkpoint (MixPro §4.2), in the style of 🤗's script of the same name.

    python examples/run_semantic_segmentation.py                      # offline: the embedded digits task
    python examples/run_semantic_segmentation.py --model_name_or_path outputs/mixpro-digits --decoder segmenter
    python examples/run_semantic_segmentation.py --model_name_or_path CKPT --dataset_name scene_parse_150 \\
        --reduce_labels --crop_size 512 --base_size 512 --eval_scales 0.5,0.75,1.0,1.25,1.5,1.75

All flags: ``python examples/run_semantic_segmentation.py --help``. The code is ``mixpro_hf.segmentation_train``.
"""

import sys

from mixpro_hf.segmentation_train import main

if __name__ == "__main__":
    sys.exit(main())
