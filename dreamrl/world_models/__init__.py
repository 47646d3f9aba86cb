"""World models: what is learned from real experience. :mod:`.rssm` is DreamerV3's
(encoder, RSSM, decoder, reward and continue heads); :mod:`.base` holds what every
world model shares with the agent and the diagnostics."""
