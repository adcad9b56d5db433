"""Forward models, one module per degradation family, each with its closed-form data step (and,
for rain and haze, the classical estimate from the observation alone); ``filters``: the image
filters those estimates are built from. The generators draw parameters and call these."""
