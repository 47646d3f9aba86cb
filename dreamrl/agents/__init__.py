"""Agents: what the training loop trains (:mod:`.base` says what it asks of one);
:mod:`.dreamer` is the DreamerV3 agent."""
