"""Networks: the guidance-conditioned denoiser (prior), the proxy (hyper-guidance) and the
unfolded K-stage reconstruction that ties them to a task's physics."""
