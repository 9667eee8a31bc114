"""Figure scripts for the paper: each takes --out and --smoke and writes a PNG and the JSON it plots."""
