"""Generic captioning data for the tiny base (its "stage-1" pre-training).

Like LLaVA's pre-training on image-caption pairs, the base learns to *describe*
images (digits, dots, shapes, charts, words, easy-vqa shapes) with a few generic
instructions. The images come from their own random streams, digit pool and easy-vqa
image ids, so none is a benchmark image, and no benchmark instruction or answer
format is seen: the base describes ("4 black dots") where a task asks for an
answer ("4", "5", "even"), so zero-shot accuracy is low while LoRA can learn each
task from features the base already has.
"""

from __future__ import annotations

import numpy as np

from fcit_flower.tasks.mini_fcit import procedural, sources

INSTRUCTIONS = (
    "describe the image.",
    "what is in this picture?",
    "caption this image.",
)


def _describe(kind: int, rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    # The most informative word comes first, so the first answer position of the
    # base already gathers it from the image.
    if kind == 0:
        image, count = procedural.dots(rng, size)
        return np.asarray(image), f"{count} black dots"
    if kind == 1:
        index = int(rng.choice(sources.digit_pool("pretrain")))
        image, label = sources.digit_image(index, size)
        return np.asarray(image), f"{label} handwritten digit"
    if kind == 2:
        image, fields, where = procedural.quadrant(rng, size)
        return np.asarray(image), f"{where} {fields['colour']} {fields['shape']}"
    if kind == 3:
        image, _, tallest = procedural.tallest_bar(rng, size)
        return np.asarray(image), f"{tallest} highest of three bars"
    if kind == 4:
        image, _, value = procedural.bar_value(rng, size)
        return np.asarray(image), f"{value} level bar"
    if kind == 5:
        image, _, text = procedural.caption(rng, size)
        # Not the flickr30k answer format ("a red circle and a blue square").
        objects = [part.split()[-2:] for part in text.split(" and ")]
        return np.asarray(image), " then ".join(f"{s} in {c}" for c, s in objects)
    if kind == 6:
        image, _, text = procedural.word(rng, size)
        return np.asarray(image), f"{text} written"
    if kind == 7:
        image, fields, _ = procedural.compare_bars(rng, size)
        return np.asarray(
            image
        ), f"{fields['tall']} bar higher than {fields['short']} bar"
    image_id = int(
        rng.integers(sources.EASY_VQA_BENCHMARK_IMAGES, sources.EASY_VQA_TRAIN_IMAGES)
    )
    colour, shape = sources.easy_vqa_attributes(image_id)
    return np.asarray(
        sources.easy_vqa_image("train", image_id, size)
    ), f"{colour} {shape}"


def pretraining_corpus(
    count: int, *, seed: int, size: int
) -> list[tuple[np.ndarray, str, str]]:
    """``count`` (image, instruction, caption) triples, deterministic in ``seed``."""
    rng = np.random.default_rng([seed, 77])
    corpus = []
    for index in range(count):
        image, caption = _describe(index % 9, rng, size)
        instruction = INSTRUCTIONS[int(rng.integers(0, len(INSTRUCTIONS)))]
        corpus.append((image, instruction, caption))
    return corpus
