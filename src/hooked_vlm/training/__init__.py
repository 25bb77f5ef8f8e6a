"""Training of the tiny VLMs embedded in hooked-vlm (tiny-native, tiny-gate, tiny-llava).

Random weights make every interpretability finding meaningless, and no checkpoint can be
downloaded in tests, so hooked-vlm ships two small models trained here on the synthetic
shapes dataset (:mod:`hooked_vlm.data.synthetic`):

- ``models``: the HF architectures (Chameleon with a VQ tokenizer; LLaVA with a CLIP tower);
- ``vocab``: word-level tokenizers and real HF processors;
- ``vq``: fitting tiny-native's VQ tokenizer (autoencoder + k-means codebook);
- ``batches``: tasks -> token batches; ``loop``: the optimisation loop;
- ``evaluate``: held-out accuracies; ``train``: :func:`train_tiny`, the one entry point;
- ``finetune``: :func:`finetune`, a native model fine-tuned with text→EOI attention masked
  (the Narrow Gate paper's NeurIPS experiment), LoRA (peft) or full; or with text→image
  tokens masked, which plants a gate at EOI (a ground truth for that experiment).

Example:
    >>> from hooked_vlm.training import train_tiny
    >>> report = train_tiny("tiny-llava", "out/tiny-llava", seed=0)
"""

from hooked_vlm.training.finetune import FinetuneConfig, finetune
from hooked_vlm.training.train import TrainConfig, train_config, train_tiny

__all__ = ["FinetuneConfig", "TrainConfig", "finetune", "train_config", "train_tiny"]
