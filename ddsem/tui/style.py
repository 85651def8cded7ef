"""The app's Textual CSS (kept in Python so it ships inside the package without package data)."""

CSS = """
/* ddsem tui: layout only; colours come from the Textual theme. */

.hint {
    color: $warning;
    padding: 0 1;
    height: auto;
}

.summary {
    padding: 0 1;
    height: auto;
    color: $text-muted;
}

.title {
    padding: 0 1;
    height: 1;
    text-style: bold;
}

.title.three-lines {
    height: 3;
}

.verdict {
    padding: 0 1;
    height: auto;
}

.verdict.none {
    color: $warning;
}

.pager {
    padding: 0 1;
    height: 1;
    color: $text-muted;
}

OpenTable {
    height: 1fr;
}

TileGrid {
    layout: grid;
    grid-size: 3;
    grid-gutter: 0 1;
    grid-rows: auto;
    grid-columns: auto;
    height: 1fr;
    padding: 0 1;
}

ImageTile {
    border: round $foreground 30%;
    border-title-color: $foreground;
    border-subtitle-color: $text-muted;
    padding: 0;
}

ImageTile.full {
    width: 34;
    height: 18;
}

ImageTile.compact {
    width: 18;
    height: 10;
}

ImageTile:focus {
    border: heavy $accent;
    border-title-color: $accent;
}

/* one distilled image */

#detail-top {
    height: 21;
}

#detail-image {
    width: 36;
}

#picture {
    border: round $accent;
    width: 34;
    height: 18;
}

#facts {
    padding: 0 1;
    height: auto;
    color: $text-muted;
}

#detail-scores {
    width: 50;
    margin: 0 1 0 0;
}

#detail-curve {
    width: 1fr;
}

#curve {
    height: 1fr;
}

#detail-bottom {
    height: 1fr;
}

/* questions */

#query-bar {
    height: auto;
}

#query {
    width: 1fr;
}

#query-set {
    width: 30;
}

#query-body {
    height: 1fr;
}

#answers {
    width: 1fr;
}

#evidence-panel {
    width: 58;  /* three compact tiles a row */
}

/* help */

HelpScreen {
    align: center middle;
}

#help {
    width: 116;
    height: auto;
    max-height: 100%;
    border: round $accent;
    background: $surface;
    padding: 0 1;
}

#help-columns {
    height: auto;
}

.help-column {
    width: 1fr;
    height: auto;
    padding: 0 1 0 0;
}

#help-intro {
    height: auto;
    color: $text-muted;
}
"""
