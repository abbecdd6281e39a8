"""Plotly figures of research results: equity and drawdown, trades on price, sweep heatmaps,
walk-forward in- vs out-of-sample."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def equity_figure(equity: pd.Series, drawdown: pd.Series, *, title: str = "") -> go.Figure:
    """Equity above, drawdown (in %) below, on one time axis."""
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3])
    figure.add_trace(go.Scatter(x=equity.index, y=equity, name="equity"), row=1, col=1)
    figure.add_trace(
        go.Scatter(x=drawdown.index, y=drawdown * 100, name="drawdown %", fill="tozeroy"),
        row=2,
        col=1,
    )
    figure.update_layout(title=title, height=500)
    return figure


def trades_figure(bars: pd.DataFrame, trades: pd.DataFrame, *, title: str = "") -> go.Figure:
    """The close with each trade's entry (triangle up long, down short) and exit (x)."""
    figure = go.Figure(go.Scatter(x=bars["ts"], y=bars["close"], name="close"))
    if not trades.empty:
        long = trades["Direction"] == "Long"
        sides = (("long", long, "triangle-up"), ("short", ~long, "triangle-down"))
        for side, chosen, symbol in sides:
            entries = trades.loc[chosen]
            figure.add_trace(
                go.Scatter(
                    x=entries["Entry Timestamp"],
                    y=entries["Avg Entry Price"],
                    mode="markers",
                    marker={"symbol": symbol, "size": 9},
                    name=f"{side} entry",
                )
            )
        closed = trades.loc[trades["Status"] == "Closed"]
        figure.add_trace(
            go.Scatter(
                x=closed["Exit Timestamp"],
                y=closed["Avg Exit Price"],
                mode="markers",
                marker={"symbol": "x", "size": 8},
                name="exit",
            )
        )
    figure.update_layout(title=title, height=450)
    return figure


def heatmap_figure(table: pd.DataFrame, *, metric: str, title: str = "") -> go.Figure:
    """A metric over two parameters: `table` has one parameter as index, one as columns."""
    figure = go.Figure(
        go.Heatmap(
            z=table.to_numpy(),
            x=[str(c) for c in table.columns],
            y=[str(i) for i in table.index],
            colorbar={"title": metric},
        )
    )
    figure.update_layout(
        title=title or metric,
        xaxis_title=str(table.columns.name),
        yaxis_title=str(table.index.name),
        height=500,
    )
    return figure


def walk_forward_figure(windows: pd.DataFrame, *, metric: str) -> go.Figure:
    """The metric of each window's best parameters in-sample and out-of-sample, side by side."""
    labels = [str(ts.date()) for ts in windows["test_start"]]
    figure = go.Figure(
        [
            go.Bar(x=labels, y=windows[f"in_sample_{metric}"], name="in-sample"),
            go.Bar(x=labels, y=windows[f"out_of_sample_{metric}"], name="out-of-sample"),
        ]
    )
    figure.update_layout(
        barmode="group", title=f"walk-forward {metric}", xaxis_title="test window", height=400
    )
    return figure
