"""The run room: a scenario in, a verdict out. The scenario schema, the builder that wires a
network from it, the outage table, the harness that runs or serves it, the expectations and
the report."""
