import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

# Before anything imports huggingface_hub: never reach for the Hub, and never touch the user's cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hf_home_"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


REPO = Path(__file__).resolve().parent.parent
KEYWORDS = REPO / "data" / "keywords"


# The schedule of a fine-tuning test run of seconds: two epochs, the keep rate shrinking over the second half.
TINY_SCHEDULE = ["--num_train_epochs", "2", "--shrink_start_epoch", "0.5", "--shrink_epochs", "1", "--logging_steps", "1",
                 "--disable_tqdm", "true"]  # fmt: skip


def load_recipe(name):
    """A script of recipes/ as a module, so tests call its `main(argv)` in-process."""
    spec = importlib.util.spec_from_file_location(name, REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_ast_kwargs(**overrides):
    """A 12-layer AST small enough for unit tests: 64 mel bins x 128 frames in a 4 x 8 grid of 16x16 patches."""
    kwargs = dict(
        hidden_size=64,
        num_hidden_layers=12,
        num_attention_heads=4,
        intermediate_size=128,
        num_mel_bins=64,
        max_length=128,
        patch_size=16,
        frequency_stride=16,
        time_stride=16,
        num_labels=5,
    )
    kwargs.update(overrides)
    return kwargs


def pytest_ignore_collect(collection_path, config):
    # transformers' common tests import upstream files that only `make test-full` fetches (and take minutes): the
    # quick tier does not even import them.
    if collection_path.name == "test_transformers_common.py" and "not full" in (config.getoption("markexpr") or ""):
        return True
    return None


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    # Compiled code objects are shared by every test that compiles a model; without a reset, later fullgraph tests
    # hit dynamo's recompile limit (8) and fail depending on which tests ran before them.
    yield
    if "torch._dynamo" in sys.modules:
        sys.modules["torch._dynamo"].reset()


@contextlib.contextmanager
def one_thread():
    # Tiny models are dominated by thread synchronisation; on a loaded 2-core machine two threads are much slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_torch_thread():
    with one_thread():
        yield


@pytest.fixture
def keyword_clip():
    return sorted((KEYWORDS / "test" / "yes").glob("*.flac"))[0]


_BLOCK_PACKAGE = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_token_prune" or name.startswith("hf_token_prune."):
            raise ImportError("hf_token_prune is blocked for this test")
sys.meta_path.insert(0, Block())
try:
    import hf_token_prune
    raise SystemExit("hf_token_prune was importable")
except ImportError:
    pass
"""


def run_with_package_blocked(code: str, cwd) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh, offline Python where ``hf_token_prune`` cannot be imported, as for a Hub user."""
    script = _BLOCK_PACKAGE + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=300)


def tiny_audiomae_kwargs(**overrides):
    """AudioMAE's counterpart of `tiny_ast_kwargs`: 12 layers of 64, 128 frames x 64 mel, a time-major 8 x 4 grid."""
    kwargs = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, max_length=128, num_mel_bins=64,
                  num_labels=5)
    kwargs.update(overrides)
    return kwargs


def tiny_pruned_classifier(family: str, **overrides):
    """A small pruned classifier of either family ("ast" or "audiomae"), in eval mode."""
    from hf_token_prune import (
        PrunedASTConfig,
        PrunedASTForAudioClassification,
        PrunedAudioMAEConfig,
        PrunedAudioMAEForAudioClassification,
    )

    if family == "ast":
        return PrunedASTForAudioClassification(PrunedASTConfig(**tiny_ast_kwargs(**overrides))).eval()
    return PrunedAudioMAEForAudioClassification(PrunedAudioMAEConfig(**tiny_audiomae_kwargs(**overrides))).eval()


@pytest.fixture(scope="session")
def snippet_workdir(tmp_path_factory):
    """The folder the README's and the docs pages' code blocks run in (tests/snippets.py), made once per session."""
    from snippets import make_workdir

    return make_workdir(tmp_path_factory.mktemp("snippets"))
