"""The 🤗 ``evaluate`` modules shipped in ``mixpro_hf/evaluate_modules``: loaded offline from the path the package
gives, equal to the plain functions of :mod:`mixpro_hf.metrics`, usable in an ``evaluate``-based ``compute_metrics``
and by ``evaluate.evaluator("image-classification")`` on a tiny local model and an in-memory data set."""

from __future__ import annotations

import numpy as np
import pytest

evaluate = pytest.importorskip("evaluate", reason="the optional evaluate extra (in the dev extra, so CI runs these)")

from mixpro_hf import metrics  # noqa: E402
from mixpro_hf.evaluate_modules import EVALUATE_MODULES, evaluate_module_path, load_evaluate_module  # noqa: E402


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def random_logits(n: int = 250, k: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += rng.uniform(0, 3, n)  # better than chance, not perfect
    return logits, labels


def test_every_module_ships_in_the_package_and_a_wrong_name_is_refused():
    import mixpro_hf

    assert mixpro_hf.evaluate_module_path is evaluate_module_path
    for name in EVALUATE_MODULES:
        assert evaluate_module_path(name).endswith(f"mixpro_hf/evaluate_modules/{name}.py")
    with pytest.raises(ValueError, match=r"no mixpro_hf evaluate module 'accuracy': expected one of top_k_accuracy"):
        evaluate_module_path("accuracy")


def test_without_evaluate_a_one_line_error_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "evaluate", None)  # as if the optional extra were not installed
    with pytest.raises(ImportError, match=r"needs the evaluate package: pip install 'mixpro-hf\[evaluate\]'"):
        load_evaluate_module("aurra")


def test_modules_equal_the_plain_functions():
    logits, labels = random_logits()
    top = evaluate.load(evaluate_module_path("top_k_accuracy"))
    assert top.compute(predictions=logits, references=labels) == {"accuracy": metrics.top_k_accuracy(logits, labels, 1)}
    assert top.compute(predictions=logits, references=labels, k=5) == {
        "top5_accuracy": metrics.top_k_accuracy(logits, labels, 5)
    }
    assert top.compute(predictions=logits.argmax(1), references=labels) == {
        "accuracy": metrics.top_k_accuracy(logits, labels, 1)
    }  # from class ids, as the evaluator passes them
    assert 0.3 < metrics.top_k_accuracy(logits, labels, 1) < 0.95  # a case that can tell a wrong result
    assert load_evaluate_module("expected_calibration_error").compute(
        predictions=logits, references=labels, num_bins=10
    ) == {"ece": metrics.expected_calibration_error(logits, labels, 10)}
    assert load_evaluate_module("rms_calibration_error").compute(predictions=logits, references=labels) == {
        "rms_calibration_error": metrics.rms_calibration_error(logits, labels)
    }
    assert load_evaluate_module("aurra").compute(predictions=logits, references=labels) == {
        "aurra": metrics.aurra(logits, labels)
    }
    ood = load_evaluate_module("ood_detection")
    is_out = (np.arange(len(labels)) % 3 == 0).astype(int)
    shifted = logits * np.where(is_out, 0.3, 1.0)[:, None]  # out-of-distribution: less confident
    expected = metrics.ood_metrics(shifted[is_out == 0], shifted[is_out == 1])
    assert ood.compute(predictions=shifted, references=is_out) == expected
    scores = -metrics.max_softmax(shifted)[0]
    assert ood.compute(predictions=scores, references=is_out, recall=0.5) == metrics.ood_scores_metrics(
        scores[is_out == 0], scores[is_out == 1], 0.5
    )


def test_wrong_inputs_are_one_line_errors():
    logits, labels = random_logits(20)
    with pytest.raises(ValueError, match="top-5 accuracy needs logits, got predicted class ids"):
        load_evaluate_module("top_k_accuracy").compute(predictions=logits.argmax(1), references=labels, k=5)
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        load_evaluate_module("top_k_accuracy").compute(predictions=logits, references=labels, k=0)
    with pytest.raises(ValueError, match=r"references must be 1 \(out-of-distribution\) or 0"):
        load_evaluate_module("ood_detection").compute(predictions=logits, references=labels)
    with pytest.raises(ValueError, match="needs at least 200 examples, got 20"):
        load_evaluate_module("rms_calibration_error").compute(predictions=logits, references=labels)


def test_an_evaluate_based_compute_metrics_in_the_trainer_hook_shape():
    from transformers import EvalPrediction

    logits, labels = random_logits(64, 5, seed=1)
    combined = evaluate.combine(
        [load_evaluate_module("top_k_accuracy"), load_evaluate_module("expected_calibration_error")]
    )

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        return combined.compute(predictions=prediction.predictions, references=prediction.label_ids)

    result = compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    plain = metrics.compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    assert result == {"accuracy": plain["accuracy"], "ece": plain["ece"]}


def test_the_image_classification_evaluator_runs_offline_on_a_tiny_local_model(tmp_path, tiny_vit):
    import torch
    from datasets import Dataset
    from PIL import Image
    from transformers import ViTImageProcessor

    model = tiny_vit()
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(24)]
    with torch.no_grad():
        logits = model(**processor(images, return_tensors="pt")).logits.numpy()
    # right on the even examples, wrong on the odd ones: 0.5 only if the evaluator maps the predicted labels right
    predicted = logits.argmax(1)
    labels = [int(p if i % 2 == 0 else (p + 1) % model.config.num_labels) for i, p in enumerate(predicted)]
    data = Dataset.from_dict({"image": images, "label": labels})
    # the model's folder, not a Pipeline object: evaluate 0.4.6 tests isinstance(..., transformers.TFPreTrainedModel)
    # for anything but a string, which transformers 5 no longer has
    result = evaluate.evaluator("image-classification").compute(
        model_or_pipeline=str(tmp_path),
        data=data,
        metric=load_evaluate_module("top_k_accuracy"),
        label_mapping=model.config.label2id,
    )
    assert result["accuracy"] == metrics.top_k_accuracy(logits, np.asarray(labels), 1) == 0.5
