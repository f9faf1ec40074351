"""``fcit-flower base``: the base's folder and weight hashes, one-line errors."""

import hashlib

from fcit_flower.cli import main
from fcit_flower.models.tiny import ensure_tiny_base, tiny_base_spec
from fcit_flower.report.manifest import combined_digest


def test_prints_the_tiny_bases_weight_hash(capsys):
    assert main(["base"]) == 0
    out = capsys.readouterr().out
    path = ensure_tiny_base(tiny_base_spec())  # the suite's (smoke) base
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    assert f"tiny base 'smoke': {path}" in out
    assert f"model.safetensors: sha256 {digest}" in out
    assert f"fingerprint: {combined_digest({'model.safetensors': digest})}" in out


def test_hashes_a_local_checkpoint_whatever_its_size(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    for name in ("model-00002.safetensors", "model-00001.safetensors"):
        (tmp_path / name).write_bytes(name.encode())
    assert main(["base", "--model-path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    digests = {
        n: hashlib.sha256(n.encode()).hexdigest()
        for n in ("model-00001.safetensors", "model-00002.safetensors")
    }
    assert out.index("model-00001") < out.index("model-00002")
    assert f"fingerprint: {combined_digest(digests)}" in out


def test_a_folder_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["base", "--model-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"fcit-flower: error: --model-path {tmp_path}: no config.json there "
        "(not a model folder)"
    )
    (tmp_path / "config.json").write_text("{}")
    assert main(["base", "--model-path", str(tmp_path)]) == 2
    assert "no *.safetensors or *.bin weight file" in capsys.readouterr().err
