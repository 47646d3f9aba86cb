"""Ways of learning to act in a world model: :mod:`.actor_critic` is DreamerV3's actor
and critic trained on imagined trajectories; :mod:`.mpc` plans in the model instead
(MPPI, CEM, shooting), and :mod:`.plan_stats` measures what that planning costs and
whether its plans come true."""
