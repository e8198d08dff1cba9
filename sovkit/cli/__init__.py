"""The typer CLI: parse, make one library call, print. The only place that exits."""
