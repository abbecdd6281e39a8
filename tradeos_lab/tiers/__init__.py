"""The three Redis tiers: stream bus, live-state cache and ephemeral flags."""
