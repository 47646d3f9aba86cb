"""Model-free baselines from stable-baselines3, trained and evaluated as dreamrl trains
and evaluates DreamerV3 (docs/baselines.md).

``agent.kind`` ``ppo``, ``sac`` or ``dqn`` (presets of the same names) trains one through
:func:`.train.train`, the kind's entry in :data:`dreamrl.agents.TRAINERS`: on the envs
:func:`dreamrl.envs.make_env` builds for the Dreamer run, wrapped for SB3 by
:mod:`.env` (same observations, image size, action repeat and time limits), evaluated by
:func:`dreamrl.run.evaluate.evaluate` through :class:`.agent.BaselineAgent`, into a run
dir of the same layout. SB3 is imported only when a baseline trains or loads.

- :mod:`.observations`: dreamrl observations in SB3's layout, frame stacking
- :mod:`.env`: the gymnasium env SB3 trains on
- :mod:`.algorithms`: the algorithm of each kind, its action spaces and settings
- :mod:`.zoo`: RL Zoo's tuned hyperparameters per task
- :mod:`.agent`: the trained model behind dreamrl's Agent protocol; its checkpoint
- :mod:`.buffer`: an off-policy replay buffer in a checkpoint, as plain arrays
- :mod:`.callback`, :mod:`.train`: the training run around SB3's ``learn``
"""
