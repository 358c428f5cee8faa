"""Source-imaging networks: FAIR-ESI and the learned baselines (all TorchScript-able)."""
