"""This package's models in 🤗's Auto classes, registered when ``mixpro_hf`` is imported.

CA-Swin (:mod:`mixpro_hf.ca_swin`): ``AutoConfig`` knows model type ``ca_swin`` and ``AutoModelForImageClassification``
builds ``CaSwinForImageClassification``; ``save_pretrained`` copies its code next to the weights with an ``auto_map``,
so stock transformers loads a saved model with ``trust_remote_code=True`` without this package.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForImageClassification

from .ca_swin import CaSwinConfig, CaSwinForImageClassification

AutoConfig.register(CaSwinConfig.model_type, CaSwinConfig, exist_ok=True)
AutoModelForImageClassification.register(CaSwinConfig, CaSwinForImageClassification, exist_ok=True)
CaSwinConfig.register_for_auto_class()
CaSwinForImageClassification.register_for_auto_class("AutoModelForImageClassification")
