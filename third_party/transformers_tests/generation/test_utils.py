"""Stand-in (ours): the sdist lacks tests/generation; ModelTesterMixin names this class only in issubclass checks."""


class GenerationTesterMixin:
    pass
