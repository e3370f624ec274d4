"""recipes/inference_demo.py on a saved model folder: the folder's own feature extractor, real labels, the PNG."""

import torch

from conftest import load_recipe, tiny_ast_kwargs
from hf_token_prune import AudioMAEFeatureExtractor, PrunedASTConfig, PrunedASTForAudioClassification

LABELS = [f"sound_{i}" for i in range(10)]


def test_inference_demo_uses_the_folders_model_and_feature_extractor(tmp_path, capsys):
    torch.manual_seed(0)
    config = PrunedASTConfig(**tiny_ast_kwargs(num_labels=10, id2label=dict(enumerate(LABELS))), keep_rate=0.7)
    PrunedASTForAudioClassification(config).save_pretrained(tmp_path / "model")
    # minimum padding: an ASTFeatureExtractor read from this folder would silently pad with zeros instead
    AudioMAEFeatureExtractor(num_mel_bins=64, max_length=128, mean=-9.0, std=5.0).save_pretrained(tmp_path / "model")
    demo = load_recipe("inference_demo")
    model, extractor = demo.build_model(demo.parse_args(["--model_name_or_path", str(tmp_path / "model")]))
    assert isinstance(extractor, AudioMAEFeatureExtractor) and extractor.fbank_padding == "minimum"
    assert isinstance(model, PrunedASTForAudioClassification) and model.config.keep_rate == 0.7

    demo.main(["--model_name_or_path", str(tmp_path / "model"), "--keep_rates", "1.0,0.5", "--repeats", "2",
               "--torch_threads", "1", "--output_dir", str(tmp_path / "out")])  # fmt: skip
    printed = capsys.readouterr().out
    assert "[32, 32, 32]" in printed and "[16, 8, 4]" in printed  # 32 patches at keep rates 1.0 and 0.5
    assert "sound_" in printed  # the folder's labels, not the default model's keywords
    assert (tmp_path / "out" / "kept_patches.png").read_bytes().startswith(b"\x89PNG")
