"""Stand-in (ours): the sdist lacks tests/exporters. tests/test_compile_export.py tests torch.compile / torch.export."""


class ExportTesterMixin:
    pass
