"""Training data, LoRA fine-tuning and vLLM serving for the stages whose adapters SAM-NER trains.

Nothing here is imported by the inference program. ``builders`` needs only the core; ``finetune`` needs
the ``train`` extra (torch, transformers, peft, datasets), imported when a function needs it.
"""
