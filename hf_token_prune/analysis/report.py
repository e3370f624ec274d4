"""Writing results: every table as CSV + markdown, every figure as PNG, and the ``index.md`` that links them."""

import math
from pathlib import Path


def _format(value, digits):
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(frame, digits=2):
    """A pandas DataFrame as a GitHub markdown table: floats to ``digits`` decimals (an int, or a dict by column
    with 2 for the others), NaN left blank."""
    header = [str(column) for column in frame.columns]
    places = [digits.get(column, 2) if isinstance(digits, dict) else digits for column in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_format(value, d) for value, d in zip(row, places)) + " |")
    return "\n".join(lines) + "\n"


def write_table(frame, output_dir, name, digits=2):
    """Write ``name.csv`` and ``name.md``; return the markdown text."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(output_dir / f"{name}.csv", index=False)
    text = markdown_table(frame, digits)
    (output_dir / f"{name}.md").write_text(text)
    return text


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi=100):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def section(title, text, tables=(), figures=()):
    """A markdown section of ``index.md``: text, the tables inline with links to their CSV, the figures shown."""
    parts = [f"## {title}\n", text.strip() + "\n"]
    for name, markdown in tables:
        parts.append(markdown)
        parts.append(f"[{name}.csv]({name}.csv) · [{name}.md]({name}.md)\n")
    for figure in figures:
        parts.append(f"![{Path(figure).stem}]({Path(figure).as_posix()})\n")
    return "\n".join(parts)


def table_and_figure_section(title, text, table, plot, output_dir, name, digits=2):
    """Write the analysis's ``table`` (``name.csv``, ``name.md``: :func:`write_table`) and its figure (``plot`` to
    ``name.png``) to ``output_dir``; return the :func:`section` showing both."""
    markdown = write_table(table, output_dir, name, digits)
    plot(f"{output_dir}/{name}.png")
    return section(title, text, [(name, markdown)], [f"{name}.png"])


def write_index(output_dir, title, header_lines, sections):
    """Write ``index.md``: a title, a bullet list of facts about the run, then one section per analysis."""
    text = f"# {title}\n\n" + "".join(f"- {line}\n" for line in header_lines) + "\n" + "\n".join(sections)
    path = Path(output_dir) / "index.md"
    path.write_text(text)
    return path
