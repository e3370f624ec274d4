"""The one error boundary every command's `main(argv)` runs inside: a user's mistake or a broken file is one line
naming the problem and the fix, never a traceback; a bug says it is one and where its traceback went.

Exit codes (the same for every command):
    0    success
    1    an expected error: bad input, a missing / corrupt / misfit model or file, a full disk, no permission
    2    a usage error: an unknown flag or a value out of range (argparse's)
    70   an internal error, i.e. a bug (EX_SOFTWARE): the traceback is written to a file under the system temp folder
    130  interrupted with Ctrl-C (128 + SIGINT)

`--debug` anywhere on a command line prints the full traceback of any error instead.
"""

import functools
import sys
import tempfile
import traceback


EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BUG = 70
EXIT_INTERRUPTED = 130
DEBUG_FLAG = "--debug"


def one_line(error) -> str:
    """An exception's message on one line (some libraries' messages span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def _expected_errors():
    # safetensors and huggingface_hub raise their own types for a corrupt weights file or a wrongly typed config field.
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError

    return ValueError, OSError, ImportError, EOFError, StrictDataclassError, SafetensorError


def command(prog: str):
    """Decorate a command's `main(argv)` with the boundary; `prog` starts every error line."""

    def decorate(main):
        @functools.wraps(main)
        def run(argv=None):
            argv = list(sys.argv[1:] if argv is None else argv)
            debug = DEBUG_FLAG in argv
            argv = [argument for argument in argv if argument != DEBUG_FLAG]
            try:
                return main(argv)
            except SystemExit:
                raise
            except KeyboardInterrupt as error:
                _close_progress_bars()
                if debug:
                    traceback.print_exc()
                detail = f": {one_line(error)}" if str(error) else ""
                print(f"{prog}: interrupted (Ctrl-C){detail}", file=sys.stderr)
                raise SystemExit(EXIT_INTERRUPTED) from None
            except Exception as error:
                _close_progress_bars()
                if debug:
                    traceback.print_exc()
                if isinstance(error, _expected_errors()):
                    raise SystemExit(f"{prog}: {one_line(error)}") from None
                where = "above" if debug else _write_traceback(prog)
                print(
                    f"{prog}: internal error (a bug in hf-token-prune, not in your input): {type(error).__name__}: "
                    f"{one_line(error)}. Full traceback: {where}; please report it with that file.",
                    file=sys.stderr,
                )
                raise SystemExit(EXIT_BUG) from None

        return run

    return decorate


def _close_progress_bars():
    """Close the progress bars the error left open: each would redraw itself when collected, after the error line,
    and hide it from a user reading the last line."""
    tqdm_module = sys.modules.get("tqdm.std")  # loaded only if some bar was made
    if tqdm_module is not None:
        for bar in list(tqdm_module.tqdm._instances):
            bar.close()


def _write_traceback(prog) -> str:
    with tempfile.NamedTemporaryFile("w", prefix=f"hf-token-prune-{prog}-", suffix=".log", delete=False) as file:
        traceback.print_exc(file=file)
    return file.name


__all__ = ["EXIT_BUG", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "command", "one_line"]
