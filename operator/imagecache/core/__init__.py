"""Pure logic shared by the agent and the operator: no I/O, no clock, no frameworks."""
