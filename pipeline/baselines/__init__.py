"""What the learned hyper-guidance must beat: manual schedules, plug-and-play, classical methods."""
