"""What a run leaves for use outside it: ``adapters/stage-<k>/`` after each stage.

- :mod:`~fcit_flower.export.layout`: folder names, stage lookup, atomic folder
  writes and the model card (plain data, no torch);
- :mod:`~fcit_flower.export.tensors`: PEFT adapters, plain safetensors arrays and
  DISCO's router, written with PEFT's config class and ``safetensors``;
- :mod:`~fcit_flower.export.stage`: the ServerApp's export of one stage;
- :mod:`~fcit_flower.export.use`: loading an export, ``predict`` and ``evaluate``;
- :mod:`~fcit_flower.export.commands`: their command-line interface.
"""
