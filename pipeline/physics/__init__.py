"""Forward models, one module per degradation family, each with its closed-form data step."""
