"""`hf-token-prune explore`: serve the explorer web app on a model folder, or write it as a Hugging Face Space (the
app is hf_token_prune.explorer, whose docstring is the help)."""

import argparse
import os
import sys

from .. import explorer
from ..checks import CommandParser, check_model, positive_int
from ..errors import command
from ..explorer import import_gradio, load_app, shipped_examples, write_space


def parse_args(argv=None):
    from transformers.hf_argparser import string_to_bool

    parser = CommandParser("explore", description=explorer.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True,
                        help="model folder (saved by this package, or a stock AST checkpoint)")
    parser.add_argument("--port", type=positive_int, default=7860, help="local port (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine)")
    parser.add_argument("--share", type=string_to_bool, default=False,
                        help="also serve through a public gradio.live link (needs the network; default: false)")
    parser.add_argument("--write_space", metavar="DIR",
                        help="write a Hugging Face Space folder (app.py, the model, examples) to DIR instead of serving")
    return parser.parse_args(argv)


@command("explore")
def main(argv=None):
    args = parse_args(argv)
    check_model(args.model_name_or_path)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage pings
    import_gradio()  # before the model loads: a missing extra is said at once
    if args.write_space:
        space = write_space(args.model_name_or_path, args.write_space, shipped_examples())
        print(f"wrote a Space to {space}: push it with `hf upload <user>/<space> {space} --repo-type space`.")
        return 0
    app = load_app(args.model_name_or_path, examples=shipped_examples())
    app.launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
