"""The reward and episode-end model (issue 33; DIAMOND's RewEndModel idea, our code). (to come)"""

REWARD_DIR = "reward"  # beside a world model's weights: <model>/reward/
