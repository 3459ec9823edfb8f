"""Live call control: what a command sends and how its result is judged, without I/O
(`plan`), and the commands against Postgres and the PBX (`live`)."""
