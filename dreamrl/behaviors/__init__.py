"""Ways of learning to act in a world model: :mod:`.actor_critic` is DreamerV3's actor
and critic trained on imagined trajectories."""
